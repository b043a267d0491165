//! f32 matrix product `C = A·B (+ bias)` with register-tiled x86-64 kernels
//! (AVX-512F, or AVX2 with FMA), the kernel behind [`super::linear`]'s
//! inference path on flex and of [`super::attention`]'s. flex multiplies
//! through the `gemm` crate, whose default build runs well below PyTorch's
//! oneDNN/MKL speed on this project's machines (BENCHMARKS.md, "Where the
//! time goes"); every Linear layer of BEATs and EAT is such a product.
//!
//! The layout is the usual blocked one (Goto and van de Geijn, "Anatomy of
//! high-performance matrix multiplication", 2008): B is packed into
//! [`KC`] × NR panels, A into [`KC`] × MR panels, and tasks of at most
//! [`MC`] × [`NC`] elements of C run on the threads; an MR × NR register
//! tile accumulates over one panel pair
//! (AVX-512: 12 × 32, 24 of the 32 zmm registers; AVX2: 6 × 16, 12 of the 16
//! ymm registers). Every element of C is summed in the same order (k blocks
//! in turn, k ascending inside a block) whatever the task split, so results
//! do not depend on the thread count.

use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Depth of a packed panel: a 256 × 32 B panel (32 KiB) stays in L1 while
/// the tile walks down the rows.
const KC: usize = 256;
/// Most rows of C one task computes (their part of packed A, 192 × 256
/// floats a k block, 192 KiB, stays in L2); a multiple of both kernels' MR.
const MC: usize = 192;
/// Most columns of C one task computes; a multiple of both kernels' NR.
const NC: usize = 256;
/// Column strips one packing task copies.
const PACK_STRIPS: usize = 16;
/// The largest tile, for the kernels' scratch buffer.
const TILE_MAX: usize = 12 * 32;

/// The register kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// The kernel products run on: the best this CPU supports, or the one
    /// `ASD_GEMM_ISA` (`avx2`, `avx512`) names if the CPU supports it (to
    /// measure or test the AVX2 kernel on an AVX-512 machine); `None` without
    /// AVX2 + FMA or off x86-64. Read once per process.
    pub fn detect() -> Option<Isa> {
        static ISA: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let supported = Isa::supported();
            let wanted = std::env::var("ASD_GEMM_ISA").ok();
            let named = wanted.as_deref().map(|w| match w {
                "avx2" => Some(Isa::Avx2),
                "avx512" => Some(Isa::Avx512),
                _ => None,
            });
            match named {
                Some(Some(isa)) if supported.contains(&isa) => Some(isa),
                Some(_) => {
                    eprintln!(
                        "asd: ASD_GEMM_ISA={wanted:?} is not a kernel this CPU runs ({supported:?}); using the best"
                    );
                    supported.first().copied()
                }
                None => supported.first().copied(),
            }
        })
    }

    /// The kernels this CPU runs, best first.
    pub fn supported() -> Vec<Isa> {
        let mut isas = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx2);
            }
        }
        isas
    }

    /// Rows and columns of the register tile.
    const fn tile(self) -> (usize, usize) {
        match self {
            Isa::Avx512 => (12, 32),
            Isa::Avx2 => (6, 16),
        }
    }
}

/// Whether this CPU runs a kernel.
pub fn available() -> bool {
    Isa::detect().is_some()
}

/// B ([k, n], row-major) in the kernel's order: for each block of [`KC`]
/// rows, for each strip of NR columns, the block's rows of the strip
/// (zero-padded to NR).
pub struct PackedB {
    data: Vec<f32>,
    k: usize,
    n: usize,
    isa: Isa,
}

impl PackedB {
    /// Panics unless [`available`].
    pub fn new(b: &[f32], k: usize, n: usize) -> PackedB {
        PackedB::for_kernel(b, k, n, Isa::detect().expect("gemm needs AVX2 with FMA, or AVX-512"))
    }

    /// B packed for the kernel of `isa`, which the CPU must support.
    fn for_kernel(b: &[f32], k: usize, n: usize, isa: Isa) -> PackedB {
        assert_eq!(b.len(), k * n, "B is not {k} × {n}");
        let nr = isa.tile().1;
        let strips = n.div_ceil(nr);
        let mut data = vec![0f32; strips * nr * k];
        // Outside a frozen-weights scope a weight is packed on every call,
        // so in parallel: tasks of [`PACK_STRIPS`] strips of one k block,
        // each reading its rows left to right (a 1 KiB run per row) and
        // writing as many panel streams; strip by strip would read 64 bytes
        // a row, one page apart, at a third of the speed.
        for (k0, kc, block) in k_block_slices(&mut data, k, strips * nr) {
            block.par_chunks_mut(PACK_STRIPS * kc * nr).enumerate().for_each(|(g, panels)| {
                let s0 = g * PACK_STRIPS;
                for (p, row) in b[k0 * n..(k0 + kc) * n].chunks(n).enumerate() {
                    for (i, panel) in panels.chunks_mut(kc * nr).enumerate() {
                        let (c0, w) = ((s0 + i) * nr, nr.min(n - (s0 + i) * nr));
                        panel[p * nr..p * nr + w].copy_from_slice(&row[c0..c0 + w]);
                    }
                }
            });
        }
        PackedB { data, k, n, isa }
    }

    /// Rows (k) of B.
    pub fn rows(&self) -> usize {
        self.k
    }

    /// Columns (n) of B.
    pub fn cols(&self) -> usize {
        self.n
    }

    /// The panel of k block starting at `k0` (depth `kc`), column strip `s`.
    fn panel(&self, k0: usize, kc: usize, s: usize) -> &[f32] {
        let nr = self.isa.tile().1;
        panel(&self.data, self.n.div_ceil(nr) * nr, k0, kc, s, nr)
    }
}

/// What happens to a finished element of C.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Added to every row ([n]).
    pub bias: Option<&'a [f32]>,
    /// Exact GELU after the bias ([`super::activation::gelu_in_place`]), applied to each tile while it is
    /// in cache, in parallel, instead of in a second pass over C.
    pub gelu: bool,
}

/// `C = A·B`, then the epilogue, for A [m, k] and C [m, n], row-major;
/// k ≥ 1.
pub fn matmul(a: &[f32], b: &PackedB, epilogue: Epilogue, m: usize) -> Vec<f32> {
    let (k, n) = (b.k, b.n);
    assert!(k > 0, "gemm needs k ≥ 1");
    assert_eq!(a.len(), m * k, "A is not {m} × {k}");
    if let Some(bias) = epilogue.bias {
        assert_eq!(bias.len(), n, "bias is not of length {n}");
    }
    let a = PackedA::new(Lhs::Rows(a), m, k, b.isa.tile().0);
    product(&a, b, epilogue, m)
}

/// `C = Aᵀ·B` for Aᵀ given row-major as `at` [k, m]: the product of the
/// transpose without forming it. Packing reads runs of MR floats of `at`
/// instead of gathering one float per row of A, the cheaper of the two
/// directions for a large A.
pub fn matmul_transposed_a(at: &[f32], b: &PackedB, m: usize) -> Vec<f32> {
    let k = b.k;
    assert!(k > 0, "gemm needs k ≥ 1");
    assert_eq!(at.len(), m * k, "Aᵀ is not {k} × {m}");
    let a = PackedA::new(Lhs::Transposed(at), m, k, b.isa.tile().0);
    product(&a, b, Epilogue::default(), m)
}

/// C for packed operands; C is m × n.
fn product(a: &PackedA, b: &PackedB, epilogue: Epilogue, m: usize) -> Vec<f32> {
    let (n, (mr, nr)) = (b.n, b.isa.tile());
    let mut c = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return c;
    }
    let tasks = split(m, n, mr, nr, rayon::current_num_threads());
    let c_ptr = SyncPtr(c.as_mut_ptr());
    tasks.par_iter().for_each(|t| {
        // SAFETY: the tasks' (rows, cols) blocks of C are disjoint.
        unsafe { run(a, b, epilogue, t, c_ptr.get(), n) }
    });
    c
}

/// The transpose of row-major x [rows, cols]: [cols, rows], in 32 × 32
/// blocks so reads and writes both stay in cache. For operands the products
/// need transposed when [`matmul_transposed_a`] does not apply.
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const BLOCK: usize = 32;
    assert_eq!(x.len(), rows * cols, "not {rows} × {cols}");
    let mut out = vec![0f32; rows * cols];
    for r0 in (0..rows).step_by(BLOCK) {
        for c0 in (0..cols).step_by(BLOCK) {
            let width = BLOCK.min(cols - c0);
            for r in r0..(r0 + BLOCK).min(rows) {
                for (c, &v) in x[r * cols + c0..][..width].iter().enumerate() {
                    out[(c0 + c) * rows + r] = v;
                }
            }
        }
    }
    out
}

/// How A reaches [`PackedA`]: itself, [m, k] row-major, or its transpose,
/// [k, m] row-major.
#[derive(Clone, Copy)]
enum Lhs<'a> {
    Rows(&'a [f32]),
    Transposed(&'a [f32]),
}

/// A ([m, k], row-major) in the kernel's order: for each block of [`KC`]
/// columns, for each strip of MR rows, the strip's part of the block as
/// kc × MR (zero-padded rows). Packed once per product, in parallel, and
/// shared by every task that reads those rows.
struct PackedA {
    data: Vec<f32>,
    strips: usize,
    mr: usize,
}

impl PackedA {
    fn new(a: Lhs, m: usize, k: usize, mr: usize) -> PackedA {
        let strips = m.div_ceil(mr);
        let mut data = vec![0f32; strips * mr * k];
        for (k0, kc, block) in k_block_slices(&mut data, k, strips * mr) {
            block.par_chunks_mut(kc * mr).enumerate().for_each(|(i, panel)| {
                let (r0, rows) = (i * mr, mr.min(m - i * mr));
                match (a, mr) {
                    (Lhs::Rows(a), 12) => pack_rows::<12>(panel, a, (r0, rows), (k0, kc), k),
                    (Lhs::Rows(a), 6) => pack_rows::<6>(panel, a, (r0, rows), (k0, kc), k),
                    (Lhs::Transposed(at), 12) => pack_columns::<12>(panel, at, (r0, rows), k0, m),
                    (Lhs::Transposed(at), 6) => pack_columns::<6>(panel, at, (r0, rows), k0, m),
                    _ => unreachable!("no kernel has {mr} rows"),
                }
            });
        }
        PackedA { data, strips, mr }
    }

    /// Row strip `i` of the k block starting at `k0` (depth `kc`).
    fn panel(&self, k0: usize, kc: usize, i: usize) -> &[f32] {
        panel(&self.data, self.strips * self.mr, k0, kc, i, self.mr)
    }
}

/// One A panel from A's rows r0.. (`rows` of them, the rest zero), columns
/// k0..k0 + kc: panel[p·MR + r] = A[r0 + r, k0 + p]. MR is a constant so the
/// inner loop is MR loads and stores without bounds checks.
fn pack_rows<const MR: usize>(
    panel: &mut [f32],
    a: &[f32],
    (r0, rows): (usize, usize),
    (k0, kc): (usize, usize),
    k: usize,
) {
    let zeros = vec![0f32; kc];
    let src: [&[f32]; MR] = std::array::from_fn(|r| if r < rows { &a[(r0 + r) * k + k0..][..kc] } else { &zeros[..] });
    for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
        let dst: &mut [f32; MR] = dst.try_into().expect("MR floats");
        for (d, s) in dst.iter_mut().zip(&src) {
            *d = s[p];
        }
    }
}

/// One A panel from Aᵀ ([k, m] row-major): panel[p·MR + r] = Aᵀ[k0 + p,
/// r0 + r], a run of MR floats per p (fewer in the last strip, the rest
/// zero).
fn pack_columns<const MR: usize>(panel: &mut [f32], at: &[f32], (r0, rows): (usize, usize), k0: usize, m: usize) {
    for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
        let row = &at[(k0 + p) * m + r0..];
        if rows == MR {
            let src: &[f32; MR] = row[..MR].try_into().expect("MR floats");
            let dst: &mut [f32; MR] = dst.try_into().expect("MR floats");
            *dst = *src;
        } else {
            dst[..rows].copy_from_slice(&row[..rows]);
        }
    }
}

/// The k blocks (start, depth): as even as possible, none deeper than
/// [`KC`] (513 → 3 × 171, not 256 + 256 + 1: a block of one row would
/// cost a pass over C for one multiply-add).
fn k_blocks(k: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = k.div_ceil(KC).max(1);
    let (base, extra) = (k / count, k % count);
    (0..count).scan(0, move |k0, i| {
        let kc = base + usize::from(i < extra);
        let block = (*k0, kc);
        *k0 += kc;
        Some(block)
    })
}

/// A packed operand's k blocks, each with its slice of `data`: the block
/// at k0 holds kc rows of `width` floats (all strips, padding included)
/// and starts at k0·width.
fn k_block_slices(data: &mut [f32], k: usize, width: usize) -> Vec<(usize, usize, &mut [f32])> {
    let mut rest = data;
    let mut blocks = Vec::new();
    for (k0, kc) in k_blocks(k) {
        let (block, tail) = std::mem::take(&mut rest).split_at_mut(kc * width);
        blocks.push((k0, kc, block));
        rest = tail;
    }
    blocks
}

/// Strip `i` (`unit` floats wide) of the k block at k0 (depth kc) in the
/// layout of [`k_block_slices`]: the strip's kc × unit panel.
fn panel(data: &[f32], width: usize, k0: usize, kc: usize, i: usize, unit: usize) -> &[f32] {
    let start = k0 * width + i * kc * unit;
    &data[start..start + kc * unit]
}

/// One task: rows `r0..r1` and column strips `s0..s1` of C.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Task {
    r0: usize,
    r1: usize,
    s0: usize,
    s1: usize,
}

/// Blocks of at most [`MC`] rows and [`NC`] columns: the task's block of C
/// (192 × 256 floats, 192 KiB) stays in L2 while each k block adds to it;
/// a block as wide as C would go back to memory on every k block. The
/// column strips split further when there are fewer blocks than twice the
/// threads, so every thread has work.
fn split(m: usize, n: usize, mr: usize, nr: usize, threads: usize) -> Vec<Task> {
    let rows = MC.min(m.div_ceil(mr) * mr);
    let row_blocks = m.div_ceil(rows);
    let strips = n.div_ceil(nr);
    let col_blocks = (2 * threads).div_ceil(row_blocks).max(n.div_ceil(NC)).clamp(1, strips);
    let per = strips.div_ceil(col_blocks);
    let mut tasks = Vec::new();
    for r0 in (0..m).step_by(rows) {
        for s0 in (0..strips).step_by(per) {
            tasks.push(Task { r0, r1: (r0 + rows).min(m), s0, s1: (s0 + per).min(strips) });
        }
    }
    tasks
}

struct SyncPtr(*mut f32);
// SAFETY: used only to hand disjoint blocks of one buffer to the tasks.
unsafe impl Sync for SyncPtr {}
unsafe impl Send for SyncPtr {}
impl SyncPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// # Safety
/// `c` points to an m × `ldc` buffer and no other task writes `t`'s block.
unsafe fn run(a: &PackedA, b: &PackedB, epilogue: Epilogue, t: &Task, c: *mut f32, ldc: usize) {
    let (k, n) = (b.k, b.n);
    let (mr, nr) = b.isa.tile();
    let rows = t.r1 - t.r0;
    let mut scratch = [0f32; TILE_MAX];
    for (k0, kc) in k_blocks(k) {
        let last = k0 + kc == k;
        for s in t.s0..t.s1 {
            let (c0, cols) = (s * nr, nr.min(n - s * nr));
            let panel = b.panel(k0, kc, s);
            let bias = if last { epilogue.bias.map(|x| &x[c0..c0 + cols]) } else { None };
            let gelu = last && epilogue.gelu;
            for i in 0..rows.div_ceil(mr) {
                let strip = a.panel(k0, kc, t.r0 / mr + i);
                // SAFETY: the panels hold kc·MR and kc·NR floats; the kernel
                // writes MR·NR floats of scratch.
                unsafe { kernel(b.isa, kc, strip.as_ptr(), panel.as_ptr(), scratch.as_mut_ptr()) };
                let tile = Tile { rows: mr.min(rows - i * mr), cols, nr, add: k0 > 0, bias, gelu };
                // SAFETY: the tile lies inside this task's block of C.
                unsafe { store(&scratch, c.add((t.r0 + i * mr) * ldc + c0), ldc, &tile) };
            }
        }
    }
}

/// Where a finished tile goes: its live rows and columns, the scratch row
/// stride, whether to add to C (k blocks after the first), and the bias to
/// add and whether to apply GELU (last k block).
struct Tile<'a> {
    rows: usize,
    cols: usize,
    nr: usize,
    add: bool,
    bias: Option<&'a [f32]>,
    gelu: bool,
}

/// Writes the tile's live part from `scratch` into C. One pass over MR·NR
/// floats per kc·MR·NR multiply-adds: not worth a masked-store kernel per ISA.
///
/// # Safety
/// `c` holds the tile's rows (stride `ldc`) and columns.
unsafe fn store(scratch: &[f32], c: *mut f32, ldc: usize, tile: &Tile) {
    for r in 0..tile.rows {
        // SAFETY: row r of the tile, `cols` floats, inside C.
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), tile.cols) };
        let src = &scratch[r * tile.nr..r * tile.nr + tile.cols];
        match (tile.add, tile.bias) {
            (false, None) => row.copy_from_slice(src),
            (false, Some(b)) => row.iter_mut().zip(src).zip(b).for_each(|((c, s), b)| *c = s + b),
            (true, None) => row.iter_mut().zip(src).for_each(|(c, s)| *c += s),
            (true, Some(b)) => row.iter_mut().zip(src).zip(b).for_each(|((c, s), b)| *c = (*c + s) + b),
        }
        if tile.gelu {
            super::activation::gelu_in_place(row);
        }
    }
}

/// The MR × NR product of one A panel and one B panel into `out` (row-major,
/// stride NR).
///
/// # Safety
/// The ISA is present; `a` holds kc·MR floats, `b` kc·NR, `out` MR·NR.
unsafe fn kernel(isa: Isa, kc: usize, a: *const f32, b: *const f32, out: *mut f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded.
    unsafe {
        match isa {
            Isa::Avx512 => kernel_avx512(kc, a, b, out),
            Isa::Avx2 => kernel_avx2(kc, a, b, out),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no gemm kernel off x86-64 ({isa:?}, {kc}, {a:?}, {b:?}, {out:?})")
}

/// # Safety
/// As [`kernel`], with AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_avx512(kc: usize, a: *const f32, b: *const f32, out: *mut f32) {
    const MR: usize = 12;
    const NR: usize = 32;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..kc {
        // SAFETY: p < kc, inside both panels.
        let (b0, b1, a) =
            unsafe { (_mm512_loadu_ps(b.add(p * NR)), _mm512_loadu_ps(b.add(p * NR + 16)), a.add(p * MR)) };
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(unsafe { *a.add(r) });
            acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: row r of the MR × NR output.
        unsafe {
            _mm512_storeu_ps(out.add(r * NR), acc[0]);
            _mm512_storeu_ps(out.add(r * NR + 16), acc[1]);
        }
    }
}

/// # Safety
/// As [`kernel`], with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(kc: usize, a: *const f32, b: *const f32, out: *mut f32) {
    const MR: usize = 6;
    const NR: usize = 16;
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    for p in 0..kc {
        // SAFETY: p < kc, inside both panels.
        let (b0, b1, a) =
            unsafe { (_mm256_loadu_ps(b.add(p * NR)), _mm256_loadu_ps(b.add(p * NR + 8)), a.add(p * MR)) };
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm256_set1_ps(unsafe { *a.add(r) });
            acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: row r of the MR × NR output.
        unsafe {
            _mm256_storeu_ps(out.add(r * NR), acc[0]);
            _mm256_storeu_ps(out.add(r * NR + 8), acc[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[f32], b: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
                c[i * n + j] = s + bias.map_or(0.0, |x| x[j] as f64);
            }
        }
        c
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Edge shapes (partial tiles in both directions, several k blocks, one
    /// row, one column) against an f64 product.
    #[test]
    fn matches_a_plain_product() {
        if !available() {
            eprintln!("skipped: no AVX2/AVX-512 on this CPU");
            return;
        }
        for (m, k, n) in [(1, 1, 1), (13, 7, 33), (12, 256, 32), (200, 600, 70), (5, 513, 1), (197, 768, 100)] {
            let (a, b, bias) = (values(m * k, 1), values(k * n, 2), values(n, 3));
            for bias in [None, Some(&bias[..])] {
                let got = matmul(&a, &PackedB::new(&b, k, n), Epilogue { bias, gelu: false }, m);
                let want = reference(&a, &b, bias, m, k, n);
                let err = got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
                // |terms| < 1: f32 rounding over k terms stays below k·2⁻²³·(a few).
                assert!(err < 4.0 * k as f64 * f32::EPSILON as f64, "{m}×{k}×{n}: {err}");
            }
            // The same product from Aᵀ, bit for bit.
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let plain = matmul(&a, &PackedB::new(&b, k, n), Epilogue::default(), m);
            assert_eq!(matmul_transposed_a(&at, &PackedB::new(&b, k, n), m), plain, "{m}×{k}×{n} from Aᵀ");
        }
    }

    /// The fused GELU equals GELU applied afterwards, bit for bit, with and
    /// without a bias, across several k blocks.
    #[test]
    fn fused_gelu_equals_gelu_after() {
        if !available() {
            eprintln!("skipped: no AVX2/AVX-512 on this CPU");
            return;
        }
        let (m, k, n) = (29, 600, 45);
        let (a, b, bias) = (values(m * k, 4), values(k * n, 5), values(n, 6));
        let packed = PackedB::new(&b, k, n);
        for bias in [None, Some(&bias[..])] {
            let fused = matmul(&a, &packed, Epilogue { bias, gelu: true }, m);
            let mut after = matmul(&a, &packed, Epilogue { bias, gelu: false }, m);
            crate::nn::activation::gelu_in_place(&mut after);
            assert_eq!(fused, after);
        }
    }

    /// Every kernel this CPU runs gives the same bits: each element of C is
    /// summed in the same order whatever the tile size.
    #[test]
    fn kernels_agree_bit_for_bit() {
        let (m, k, n) = (50, 600, 77);
        let (a, b, bias) = (values(m * k, 7), values(k * n, 8), values(n, 9));
        let products: Vec<_> = Isa::supported()
            .into_iter()
            .map(|isa| matmul(&a, &PackedB::for_kernel(&b, k, n, isa), Epilogue { bias: Some(&bias), gelu: true }, m))
            .collect();
        assert!(products.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        let x: Vec<f32> = (0..70 * 45).map(|i| i as f32).collect();
        let t = transpose(&x, 70, 45);
        for r in 0..70 {
            for c in 0..45 {
                assert_eq!(t[c * 70 + r], x[r * 45 + c]);
            }
        }
    }

    /// The k blocks cover 0..k in order, none deeper than KC.
    #[test]
    fn k_blocks_cover_k() {
        for k in [1, 64, 256, 257, 513, 768, 3072, 3073] {
            let blocks: Vec<_> = k_blocks(k).collect();
            assert_eq!(blocks.iter().map(|b| b.1).sum::<usize>(), k);
            assert!(blocks.iter().all(|&(_, kc)| (1..=KC).contains(&kc)), "{k}: {blocks:?}");
            assert!(blocks.windows(2).all(|w| w[1].0 == w[0].0 + w[0].1));
        }
        assert_eq!(k_blocks(513).collect::<Vec<_>>(), [(0, 171), (171, 171), (342, 171)]);
    }

    /// The split covers C exactly once, for short and tall A.
    #[test]
    fn tasks_tile_the_output() {
        for (m, n, threads) in [(1usize, 1usize, 1), (513, 3072, 2), (4104, 768, 2), (30, 40, 8)] {
            for (mr, nr) in [Isa::Avx512.tile(), Isa::Avx2.tile()] {
                let mut hits = vec![0u8; m * n.div_ceil(nr)];
                for t in split(m, n, mr, nr, threads) {
                    for r in t.r0..t.r1 {
                        for s in t.s0..t.s1 {
                            hits[r * n.div_ceil(nr) + s] += 1;
                        }
                    }
                }
                assert!(hits.iter().all(|&h| h == 1), "{m}×{n} on {threads} threads");
            }
        }
    }
}
