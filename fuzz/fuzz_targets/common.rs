//! The readers under test take paths: each input is written to a file on
//! tmpfs, named per process so that parallel fuzz jobs never collide.

use std::path::PathBuf;

pub fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("asd-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("scratch file");
    p
}
