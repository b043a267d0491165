//! Checkpoint loaders: released BEATs (torch zip pickle), EAT (fairseq
//! pickle, Hugging Face safetensors) and our own burnpack files. The first
//! byte picks the loader, so one corpus covers all four.
#![no_main]
#[path = "common.rs"]
mod common;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};

#[derive(Module, Debug)]
struct Tiny {
    a: Linear,
    b: Linear,
}

/// Tensor data is read lazily: read every tensor, as loading a model would.
fn read_all(state: &asd::models::state_dict::StateDict) {
    for (name, t) in state.iter() {
        if let Ok(v) = t.read(name) {
            assert_eq!(v.len(), t.shape.iter().product::<usize>(), "{name}: data and shape disagree");
        }
    }
}

fn tiny() -> Tiny {
    let device = burn::tensor::Device::flex();
    Tiny { a: LinearConfig::new(3, 4).init(&device), b: LinearConfig::new(4, 2).init(&device) }
}

libfuzzer_sys::fuzz_target!(
    init: {
        // `ASD_FUZZ_BURNPACK_SEED=FILE` writes a valid input for the burnpack
        // branch (selector byte 3, then the file) to seed the corpus.
        if let Some(seed) = std::env::var_os("ASD_FUZZ_BURNPACK_SEED") {
            let p = common::scratch("seed.bpk", b"");
            tiny().save_file(&p).expect("save the seed module");
            let mut bytes = vec![3u8];
            bytes.extend(std::fs::read(&p).expect("read the seed"));
            std::fs::write(seed, bytes).expect("write the seed");
        }
    },
    |data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
        match which % 4 {
        0 => {
            let p = common::scratch("BEATs.pt", bytes);
            if let Ok(ck) = asd::models::beats::loader::read_checkpoint(&p) {
                read_all(&ck.state);
            }
        }
        1 => {
            let p = common::scratch("EAT.pt", bytes);
            if let Ok(ck) = asd::models::eat::loader::read_checkpoint(&p) {
                read_all(&ck.state);
            }
        }
        2 => {
            let p = common::scratch("model.safetensors", bytes);
            let _ = asd::models::state_dict::StateDict::from_safetensors(&p);
        }
        _ => {
            let p = common::scratch("model.bpk", bytes);
            let _ = asd::train::checkpoint::load_model(tiny(), p.parent().expect("folder"));
        }
    }
});
