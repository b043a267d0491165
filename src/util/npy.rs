//! Minimal NumPy `.npy` (format 1.0) reader and writer for little-endian
//! float32 arrays, so Python users can `numpy.load` what the tools write.

use anyhow::{Context, Result, bail};
use std::path::Path;

/// Serialises a C-ordered float32 array of the given shape to `.npy` bytes.
pub fn to_bytes(data: &[f32], shape: &[usize]) -> Result<Vec<u8>> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        bail!("npy: shape {shape:?} holds {n} values, got {}", data.len());
    }
    let dims = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' is a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * n);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Writes a float32 `.npy` file atomically.
pub fn write(path: &Path, data: &[f32], shape: &[usize]) -> Result<()> {
    let bytes = to_bytes(data, shape)?;
    super::atomic::write_bytes(path, &bytes)
}

/// Reads a little-endian float32 `.npy` file; returns (data, shape).
pub fn read(path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is not a float32 .npy file", path.display()))
}

fn parse(bytes: &[u8]) -> Result<(Vec<f32>, Vec<usize>)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("missing NUMPY magic");
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => bail!("unsupported npy version {v}"),
    };
    let header = std::str::from_utf8(bytes.get(start..start + hlen).context("truncated header")?)?;
    if !header.contains("'descr': '<f4'") {
        bail!("dtype is not little-endian float32 (header {header})");
    }
    if header.contains("'fortran_order': True") {
        bail!("fortran-ordered arrays are not supported");
    }
    let shape_txt = header.split("'shape':").nth(1).and_then(|s| s.split(')').next()).context("no shape in header")?;
    let shape: Vec<usize> = shape_txt
        .trim()
        .trim_start_matches('(')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let body = &bytes[start + hlen..];
    if body.len() != 4 * n {
        bail!("expected {} data bytes for shape {shape:?}, found {}", 4 * n, body.len());
    }
    let data = body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((data, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let bytes = to_bytes(&data, &[2, 3]).unwrap();
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let (back, shape) = parse(&bytes).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(back, data);
    }

    #[test]
    fn rejects_wrong_dtype_and_size() {
        let mut bytes = to_bytes(&[1.0, 2.0], &[2]).unwrap();
        bytes.pop();
        assert!(format!("{:#}", parse(&bytes).unwrap_err()).contains("data bytes"));
        assert!(to_bytes(&[1.0], &[2]).is_err());
    }
}
