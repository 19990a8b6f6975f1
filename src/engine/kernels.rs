//! The engine's element-wise and sparse passes over (features × n) column-major buffers:
//! fused bias + activation (+ residual skip) forward, fused activation backward with bias and
//! PReLU-slope cotangents, the loss and its cotangent, and graph propagation with Â stored in
//! compressed rows (its transpose stored too, so both directions are gathers).
//!
//! Columns are split into [`CHUNKS`] fixed chunks, processed in parallel by rayon unless the
//! global faer parallelism is `Seq`; partial sums are combined in chunk order, so results do not
//! depend on the thread count. No pass allocates.

use super::Real;
use crate::activation::Activation;
use crate::graph::SparseMatrix;
use rayon::prelude::*;

/// Column chunks per pass (fixed, for reproducible sums).
pub const CHUNKS: usize = 8;

/// σ, specialised for the inner loops.
pub enum ActKind {
    Leaky(f64),
    Prelu,
    Relu,
    /// Sigmoid and piecewise polynomials, evaluated in f64 through [`Activation`].
    General(Activation),
}

impl ActKind {
    pub fn new(a: &Activation) -> Self {
        match a {
            Activation::LeakyRelu { slope } => Self::Leaky(*slope),
            Activation::Prelu { .. } => Self::Prelu,
            Activation::Relu => Self::Relu,
            other => Self::General(other.clone()),
        }
    }
}

fn parallel() -> bool {
    !matches!(crate::batch::par(), faer::Par::Seq)
}

fn chunk_cols(n: usize) -> usize {
    n.div_ceil(CHUNKS).max(1)
}

/// Runs `f(chunk index, a chunk, b chunk)` over matching chunks of `a` and `b`.
fn chunked2<T: Real>(
    a: &mut [T],
    ca: usize,
    b: &mut [T],
    cb: usize,
    f: impl Fn(usize, &mut [T], &mut [T]) + Sync + Send,
) {
    if parallel() {
        a.par_chunks_mut(ca)
            .zip(b.par_chunks_mut(cb))
            .enumerate()
            .for_each(|(k, (x, y))| f(k, x, y));
    } else {
        a.chunks_mut(ca)
            .zip(b.chunks_mut(cb))
            .enumerate()
            .for_each(|(k, (x, y))| f(k, x, y));
    }
}

/// z += b (per feature) and h = σ(z) (+ skip), for z, h, skip of `out` features × n.
pub fn bias_act_forward<T: Real>(
    act: &ActKind,
    slope: T,
    b: &[T],
    z: &mut [T],
    h: &mut [T],
    skip: Option<&[T]>,
    out: usize,
) {
    let zero = T::default();
    match act {
        ActKind::Leaky(a) => {
            let a = T::from_f64(*a);
            fwd(
                b,
                z,
                h,
                skip,
                out,
                move |v| if v > zero { v } else { a * v },
            )
        }
        ActKind::Prelu => fwd(
            b,
            z,
            h,
            skip,
            out,
            move |v| {
                if v > zero {
                    v
                } else {
                    slope * v
                }
            },
        ),
        ActKind::Relu => fwd(b, z, h, skip, out, move |v| if v > zero { v } else { zero }),
        ActKind::General(f) => {
            let s = slope.to_f64();
            fwd(b, z, h, skip, out, move |v| {
                T::from_f64(f.value(v.to_f64(), s))
            })
        }
    }
}

fn fwd<T: Real>(
    b: &[T],
    z: &mut [T],
    h: &mut [T],
    skip: Option<&[T]>,
    out: usize,
    sigma: impl Fn(T) -> T + Sync + Send,
) {
    let cs = chunk_cols(z.len() / out) * out;
    chunked2(z, cs, h, cs, |k, zc, hc| {
        let sk = skip.map(|s| &s[k * cs..k * cs + zc.len()]);
        for (j, (zcol, hcol)) in zc
            .chunks_exact_mut(out)
            .zip(hc.chunks_exact_mut(out))
            .enumerate()
        {
            for ((zv, hv), &bv) in zcol.iter_mut().zip(hcol.iter_mut()).zip(b) {
                *zv += bv;
                *hv = sigma(*zv);
            }
            if let Some(s) = sk {
                for (hv, &sv) in hcol.iter_mut().zip(&s[j * out..(j + 1) * out]) {
                    *hv += sv;
                }
            }
        }
    });
}

/// z += b per feature (the output stage).
pub fn add_bias<T: Real>(z: &mut [T], b: &[T], out: usize) {
    for col in z.chunks_exact_mut(out) {
        for (v, &bv) in col.iter_mut().zip(b) {
            *v += bv;
        }
    }
}

/// L = c‖u − y‖² (accumulated in f64) and the cotangent 2c(u − y) into `cot[..u.len()]`.
pub fn loss_cotangent<T: Real>(u: &[T], y: &[T], cot: &mut [T], c: f64) -> f64 {
    let two_c = T::from_f64(2.0 * c);
    let mut sse = 0.0f64;
    for ((g, &ui), &yi) in cot[..u.len()].iter_mut().zip(u).zip(y) {
        let e = ui - yi;
        let e64 = e.to_f64();
        sse += e64 * e64;
        *g = two_c * e;
    }
    c * sse
}

/// gb = Σ over columns of g (`out` features × n), through per-chunk partial sums.
pub fn row_sums<T: Real>(g: &[T], out: usize, partial: &mut [T], gb: &mut [T]) {
    let cs = chunk_cols(g.len() / out) * out;
    let nch = g.len().div_ceil(cs);
    let partial = &mut partial[..nch * out];
    partial.iter_mut().for_each(|v| *v = T::default());
    for (k, gc) in g.chunks(cs).enumerate() {
        let pc = &mut partial[k * out..(k + 1) * out];
        for col in gc.chunks_exact(out) {
            for (p, &v) in pc.iter_mut().zip(col) {
                *p += v;
            }
        }
    }
    combine(partial, out, nch, gb, None);
}

fn combine<T: Real>(partial: &[T], w: usize, nch: usize, gb: &mut [T], mut gs: Option<&mut T>) {
    gb.iter_mut().for_each(|v| *v = T::default());
    if let Some(s) = gs.as_deref_mut() {
        *s = T::default();
    }
    for k in 0..nch {
        let pc = &partial[k * w..(k + 1) * w];
        for (g, &p) in gb.iter_mut().zip(pc) {
            *g += p;
        }
        if let Some(s) = gs.as_deref_mut() {
            *s += pc[w - 1];
        }
    }
}

/// zb = hb ⊙ σ'(z); gb = Σ_columns zb; PReLU: gslope += Σ hb ⊙ min(z, 0).
#[allow(clippy::too_many_arguments)]
pub fn act_backward<T: Real>(
    act: &ActKind,
    slope: T,
    z: &[T],
    hb: &[T],
    zb: &mut [T],
    out: usize,
    partial: &mut [T],
    gb: &mut [T],
    gslope: Option<&mut T>,
) {
    let zero = T::default();
    let one = T::one();
    match act {
        ActKind::Leaky(a) => {
            let a = T::from_f64(*a);
            bwd(
                z,
                hb,
                zb,
                out,
                partial,
                gb,
                gslope,
                move |v| if v > zero { one } else { a },
                false,
            )
        }
        ActKind::Prelu => bwd(
            z,
            hb,
            zb,
            out,
            partial,
            gb,
            gslope,
            move |v| {
                if v > zero {
                    one
                } else {
                    slope
                }
            },
            true,
        ),
        ActKind::Relu => bwd(
            z,
            hb,
            zb,
            out,
            partial,
            gb,
            gslope,
            move |v| if v > zero { one } else { zero },
            false,
        ),
        ActKind::General(f) => {
            let s = slope.to_f64();
            bwd(
                z,
                hb,
                zb,
                out,
                partial,
                gb,
                gslope,
                move |v| T::from_f64(f.derivative(v.to_f64(), s)),
                false,
            )
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn bwd<T: Real>(
    z: &[T],
    hb: &[T],
    zb: &mut [T],
    out: usize,
    partial: &mut [T],
    gb: &mut [T],
    gslope: Option<&mut T>,
    dsigma: impl Fn(T) -> T + Sync + Send,
    prelu: bool,
) {
    let zero = T::default();
    let cs = chunk_cols(z.len() / out) * out;
    let nch = z.len().div_ceil(cs);
    let w = out + 1;
    let partial = &mut partial[..nch * w];
    chunked2(zb, cs, partial, w, |k, zc, pc| {
        pc.iter_mut().for_each(|v| *v = zero);
        let (pb, ps) = pc.split_at_mut(out);
        let base = k * cs;
        let zz = &z[base..base + zc.len()];
        let hh = &hb[base..base + zc.len()];
        let mut sl = zero;
        for ((zcol, hcol), zbcol) in zz
            .chunks_exact(out)
            .zip(hh.chunks_exact(out))
            .zip(zc.chunks_exact_mut(out))
        {
            for (((&zv, &hv), g), p) in zcol
                .iter()
                .zip(hcol)
                .zip(zbcol.iter_mut())
                .zip(pb.iter_mut())
            {
                let d = hv * dsigma(zv);
                *g = d;
                *p += d;
                if prelu && zv < zero {
                    sl += hv * zv;
                }
            }
        }
        ps[0] = sl;
    });
    let gs = gslope.filter(|_| prelu);
    combine(partial, w, nch, gb, gs);
}

/// The piece of σ each value sits in (index among the kink points), appended to `out`.
pub fn pieces<T: Real>(z: &[T], kinks: &[f64], out: &mut Vec<u16>) {
    if kinks == [0.0] {
        let zero = T::default();
        out.extend(z.iter().map(|&v| (v > zero) as u16));
    } else {
        out.extend(
            z.iter()
                .map(|&v| kinks.partition_point(|&b| b < v.to_f64()) as u16),
        );
    }
}

/// Â in compressed rows, in the engine's float type.
pub struct Csr<T> {
    row_start: Vec<usize>,
    cols: Vec<usize>,
    vals: Vec<T>,
}

impl<T: Real> Csr<T> {
    /// Â, or Âᵀ with `transpose` (rows of Âᵀ listed in increasing column order of Â, the
    /// summation order of the general path's adjoint).
    pub fn from_sparse(a: &SparseMatrix, transpose: bool) -> Self {
        let n = a.n();
        let mut rows: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
        for i in 0..n {
            for (j, v) in a.row(i) {
                if transpose {
                    rows[j].push((i, v));
                } else {
                    rows[i].push((j, v));
                }
            }
        }
        let mut row_start = vec![0];
        let (mut cols, mut vals) = (Vec::new(), Vec::new());
        for r in rows {
            for (j, v) in r {
                cols.push(j);
                vals.push(T::from_f64(v));
            }
            row_start.push(cols.len());
        }
        Self {
            row_start,
            cols,
            vals,
        }
    }

    /// dst column i = Σ_j A_ij src column j, columns of `width` features.
    pub fn propagate(&self, src: &[T], dst: &mut [T], width: usize) {
        let n = self.row_start.len() - 1;
        let dst = &mut dst[..n * width];
        let cs = chunk_cols(n) * width;
        let body = |k: usize, dc: &mut [T]| {
            for (r, col) in dc.chunks_exact_mut(width).enumerate() {
                let i = k * (cs / width) + r;
                col.iter_mut().for_each(|v| *v = T::default());
                for e in self.row_start[i]..self.row_start[i + 1] {
                    let (j, a) = (self.cols[e], self.vals[e]);
                    for (o, &s) in col.iter_mut().zip(&src[j * width..(j + 1) * width]) {
                        *o += a * s;
                    }
                }
            }
        };
        if parallel() {
            dst.par_chunks_mut(cs)
                .enumerate()
                .for_each(|(k, dc)| body(k, dc));
        } else {
            dst.chunks_mut(cs)
                .enumerate()
                .for_each(|(k, dc)| body(k, dc));
        }
    }
}
