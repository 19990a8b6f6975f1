//! The double-double route's Gram matrix G̃ = J̃J̃ᵀ (step 1 of [`super::super`]): each entry's
//! products summed exactly enough in blocks of [`GRAM_BLOCK`] by an f64 sum pinned to one
//! binade (so its rounding errors are exact differences), the blocks' results added in
//! double-double. Its cost is four floating-point operations per product plus one for the
//! block's magnitude, vectorised over [`LANES`] columns and four rows.

use super::*;
use crate::ntk::double_double::two_sum;

/// Columns of J̃ per parallel step: every tile of columns runs over them while they (and their
/// absolute values) stay in cache.
const SUPERBLOCK: usize = 4 * GRAM_BLOCK;
/// m = 1 + 2⁻²⁰: the margin by which a block's σ exceeds twice its computed Σ|x| (step 1).
const SIGMA_MARGIN: f64 = 1.0 + pow2(-20);
/// The smallest σ (step 1; blocks with Σ|x| below ≈ 2⁻¹⁰⁰² use it, see step 4).
const SIGMA_FLOOR: f64 = pow2(-1000);
const EXPONENT_BITS: u64 = 0x7ff0_0000_0000_0000;

/// G̃ (lower triangle; the upper one is zero), hi and lo parts, n × n column-major.
pub(in super::super) fn dd_gram(sc: &Scaled) -> (Vec<f64>, Vec<f64>) {
    dd_gram_with(sc, dd_gram_tile, true)
}

/// One tile's kernel: (J̃, its columns `data` and their absolute values, j0, the tile's sums,
/// whether each block's compensation c is added).
pub(in super::super) type TileKernel =
    fn(&Scaled, &[f64], &[f64], usize, &mut [f64], &mut [f64], bool);

/// [`dd_gram`] with another kernel or without the compensation: the tests run the portable
/// build (`dd_gram_tile_imp`) and a planted error (`compensate = false`, which drops each
/// block's compensation c).
pub(in super::super) fn dd_gram_with(
    sc: &Scaled,
    kernel: TileKernel,
    compensate: bool,
) -> (Vec<f64>, Vec<f64>) {
    let (n, n_pad, p) = (sc.n, sc.n_pad, sc.p);
    // Per tile of LANES columns j0.., rows j0..n: LANES entries per row, row after row.
    let mut tiles: Vec<(Vec<f64>, Vec<f64>)> = (0..n.div_ceil(LANES))
        .map(|t| {
            let len = (n - t * LANES) * LANES;
            (vec![0.0; len], vec![0.0; len])
        })
        .collect();
    let mut abs = vec![0.0; SUPERBLOCK * n_pad];
    for chunk in sc.data[..p * n_pad].chunks(SUPERBLOCK * n_pad) {
        let abs = &mut abs[..chunk.len()];
        for (a, x) in abs.iter_mut().zip(chunk) {
            *a = x.abs();
        }
        let abs = &*abs;
        tiles
            .par_iter_mut()
            .enumerate()
            .for_each(|(t, (h, l))| kernel(sc, chunk, abs, t * LANES, h, l, compensate));
    }
    let mut hi = vec![0.0; n * n];
    let mut lo = vec![0.0; n * n];
    hi.par_chunks_mut(n)
        .zip(lo.par_chunks_mut(n))
        .enumerate()
        .for_each(|(j, (hcol, lcol))| {
            let (j0, lane) = (j / LANES * LANES, j % LANES);
            let (th, tl) = &tiles[j / LANES];
            for row in j..n {
                hcol[row] = th[(row - j0) * LANES + lane];
                lcol[row] = tl[(row - j0) * LANES + lane];
            }
        });
    (hi, lo)
}

// dd_gram_tile: [`dd_gram_tile_imp`] compiled with FMA and AVX2 when the CPU has them (the
// same operations, so the same results, on every path).
with_fma!(
    pub(in super::super) dd_gram_tile,
    dd_gram_tile_imp,
    (
        sc: &Scaled,
        data: &[f64],
        abs: &[f64],
        j0: usize,
        acc_hi: &mut [f64],
        acc_lo: &mut [f64],
        compensate: bool
    )
);

/// 1.5σ for a block whose products have computed Σ|x| = `sum_abs` (step 1): σ = max(4F,
/// 2⁻¹⁰⁰⁰) with F = 2^⌊log₂ y⌋ (0 for subnormal y), y = fl(sum_abs·m); so σ > 2·y and σ ≤ 4y
/// above the floor.
#[inline(always)]
fn block_start(sum_abs: f64) -> f64 {
    let y = sum_abs * SIGMA_MARGIN;
    let f = f64::from_bits(y.to_bits() & EXPONENT_BITS) * 4.0;
    let sigma = if f > SIGMA_FLOOR { f } else { SIGMA_FLOOR };
    1.5 * sigma
}

/// Adds columns `data` (whole columns of J̃, `abs` their absolute values) into the Gram entries
/// (row ≥ j0, column j0 + lane) of one tile, kept as Dd sums in `acc_hi`/`acc_lo` (row-major,
/// LANES per row; entries above the diagonal are computed and never read). Per block of
/// [`GRAM_BLOCK`] columns and four rows: Ŝ = Σ|a||b| by fma; then from T = 1.5σ, per product
/// T' = fma(a, b, T), d = T' − T (exact), c += fma(a, b, −d), T = T'; at the block's end
/// (s, c) with s = T − 1.5σ become one exact Dd leaf two_sum(s, c) added into the entry's sum.
#[inline(always)]
pub(in super::super) fn dd_gram_tile_imp(
    sc: &Scaled,
    data: &[f64],
    abs: &[f64],
    j0: usize,
    acc_hi: &mut [f64],
    acc_lo: &mut [f64],
    compensate: bool,
) {
    let (n, n_pad) = (sc.n, sc.n_pad);
    let lanes = j0..j0 + LANES;
    for (block, abs_block) in data
        .chunks(GRAM_BLOCK * n_pad)
        .zip(abs.chunks(GRAM_BLOCK * n_pad))
    {
        let mut i = j0;
        while i < n {
            let quad = [i, i + 1, i + 2, i + 3].map(|r| r.min(n - 1));
            // Four rows at once here: 32 independent fma chains.
            let mut sum_abs = [[0.0f64; LANES]; 4];
            for col in abs_block.chunks_exact(n_pad) {
                let b: &[f64; LANES] = col[lanes.clone()].try_into().unwrap();
                for (m, &row) in sum_abs.iter_mut().zip(&quad) {
                    let a = col[row];
                    for l in 0..LANES {
                        m[l] = a.mul_add(b[l], m[l]);
                    }
                }
            }
            let start = sum_abs.map(|m| m.map(block_start));
            for half in 0..2 {
                if i + 2 * half >= n {
                    break;
                }
                let rows = [quad[2 * half], quad[2 * half + 1]];
                let t0 = [start[2 * half], start[2 * half + 1]];
                let mut t = t0;
                let mut c = [[0.0f64; LANES]; 2];
                for col in block.chunks_exact(n_pad) {
                    let b: &[f64; LANES] = col[lanes.clone()].try_into().unwrap();
                    for r in 0..2 {
                        let a = col[rows[r]];
                        for l in 0..LANES {
                            let next = a.mul_add(b[l], t[r][l]);
                            let d = next - t[r][l];
                            c[r][l] += a.mul_add(b[l], -d);
                            t[r][l] = next;
                        }
                    }
                }
                for r in 0..2 {
                    let row = i + 2 * half + r;
                    if row >= n {
                        break;
                    }
                    let at = (row - j0) * LANES;
                    let (ah, al) = (&mut acc_hi[at..at + LANES], &mut acc_lo[at..at + LANES]);
                    for l in 0..LANES {
                        let comp = if compensate { c[r][l] } else { 0.0 };
                        let (hi, lo) = two_sum(t[r][l] - t0[r][l], comp);
                        let acc = Dd {
                            hi: ah[l],
                            lo: al[l],
                        } + Dd { hi, lo };
                        (ah[l], al[l]) = (acc.hi, acc.lo);
                    }
                }
            }
            i += 4;
        }
    }
}

/// β = E_G / ‖J̃‖_F² for the blocked sums of [`dd_gram_tile_imp`] over p products (step 1):
/// γ'_{⌈p/q⌉}·(1 + 2⁻⁴⁰) + (q²/16)·U·(1 + 2⁻¹⁶), q = [`GRAM_BLOCK`].
pub(in super::super) fn dd_gram_error_factor(p: usize) -> f64 {
    let blocks = p.div_ceil(GRAM_BLOCK);
    let between = mul_up(gamma(blocks, U_DD), 1.0 + pow2(-40));
    let q = GRAM_BLOCK as f64;
    let within = mul_up(mul_up(q * q / 16.0, U_DD), 1.0 + pow2(-16));
    add_up(between, within)
}
