//! Double-double arithmetic ([`Dd`]): a number is the unevaluated sum `hi + lo` of two f64 with
//! `hi = fl(hi + lo)`, so `|lo| ≤ u·|hi|` (u = 2⁻⁵³) and about 106 bits of significand. It
//! serves the certified λ_min bound of [`super::certify`], whose Gram matrix and Cholesky
//! factorisation must be accurate far below f64's rounding floor.
//!
//! Error-free transformations (round to nearest, no overflow):
//! - [`two_sum`]`(a, b) = (s, e)`: s = fl(a + b) and s + e = a + b exactly (Knuth's six
//!   operations, no condition on the magnitudes; exact under underflow too, since a sum that
//!   lands in the subnormal range is exact).
//! - [`two_prod`]`(a, b) = (p, e)`: p = fl(ab), e = fma(a, b, −p) and p + e = ab exactly, unless
//!   e falls below the normal range (|ab| < 2⁻⁹⁶⁹); `f64::mul_add` is always fused.
//!
//! Rounding errors of the operations (no underflow or overflow; inputs with |lo| ≤ u|hi|):
//! - [`Dd::add`] (and `sub`, which negates exactly): (s, e) = two_sum(x.hi, y.hi),
//!   t = fl(x.lo + y.lo), result = two_sum(s, fl(e + t)). Only t and fl(e + t) round:
//!   |t − (x.lo + y.lo)| ≤ u²A with A = |x.hi| + |y.hi|; |e| ≤ u(1+u)A and |t| ≤ u(1+u)A, so
//!   fl(e + t) is off by ≤ 2u²(1+u)A. As A ≤ (|x| + |y|)/(1 − u), the result is within
//!   **4u²(|x| + |y|)** of x + y. This is a bound relative to the operands, not to the sum: under
//!   cancellation the sum has no relative error bound ("weak model"; certify.rs uses only this).
//! - [`Dd::mul`]: (p, e) = two_prod(x.hi, y.hi), m = fl(x.lo·y.hi), t = fma(x.hi, y.lo, m),
//!   result = two_sum(p, fl(e + t)); x.lo·y.lo is dropped. With H = |x.hi·y.hi|: dropped term
//!   ≤ u²H, m ≤ u²H off, t ≤ u²(2+u)H off, fl(e + t) ≤ u²(1+u)(3+u)H off, in all
//!   ≤ u²(7 + 5u + u²)H, and H ≤ |xy|/(1 − u)²: relative error ≤ **8u²**.
//!
//! Both outputs come out of a final two_sum, so they satisfy |lo| ≤ u|hi| again. [`U_DD`] =
//! 2⁻¹⁰⁰ = 64u², the constant the certificate charges per operation, covers both with a factor
//! 8 to spare; the tests measure the errors exactly (with error-free expansions) against
//! 4u² and 8u².

use std::ops::{Add, Mul, Neg, Sub};

/// u = 2⁻⁵³, the unit roundoff of f64.
pub const U: f64 = f64::EPSILON / 2.0;

/// 2⁻¹⁰⁰: the per-operation error constant of double-double arithmetic charged by the
/// certificate (relative for `mul`, relative to |x| + |y| for `add`/`sub`).
pub const U_DD: f64 = 1.0 / (1u128 << 100) as f64;

// U_DD is 16 times the add bound 4u² and 8 times the mul bound 8u².
const _: () = assert!(U_DD == 64.0 * U * U);

/// A double-double number `hi + lo`, normalised: `hi = fl(hi + lo)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dd {
    pub hi: f64,
    pub lo: f64,
}

/// (fl(a + b), a + b − fl(a + b)), exactly.
#[inline(always)]
pub fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

/// (fl(ab), ab − fl(ab)), exactly unless the error term underflows.
#[inline(always)]
pub fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    let e = a.mul_add(b, -p);
    (p, e)
}

impl Dd {
    pub const ZERO: Dd = Dd { hi: 0.0, lo: 0.0 };
    pub const ONE: Dd = Dd { hi: 1.0, lo: 0.0 };

    /// An f64 as a double-double (exact).
    #[inline(always)]
    pub fn from_f64(x: f64) -> Dd {
        Dd { hi: x, lo: 0.0 }
    }

    /// The f64 nearest to hi + lo (that is hi, by normalisation).
    #[inline(always)]
    pub fn to_f64(self) -> f64 {
        self.hi
    }

    /// The exact product of two f64 as a double-double.
    #[inline(always)]
    pub fn from_product(a: f64, b: f64) -> Dd {
        let (hi, lo) = two_prod(a, b);
        Dd { hi, lo }
    }

    /// x + y within 4u²(|x| + |y|) (see the module doc).
    #[inline(always)]
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, y: Dd) -> Dd {
        let (s, e) = two_sum(self.hi, y.hi);
        let t = self.lo + y.lo;
        let (hi, lo) = two_sum(s, e + t);
        Dd { hi, lo }
    }

    /// x − y within 4u²(|x| + |y|).
    #[inline(always)]
    #[allow(clippy::should_implement_trait)]
    pub fn sub(self, y: Dd) -> Dd {
        self.add(-y)
    }

    /// x·y within relative 8u².
    #[inline(always)]
    #[allow(clippy::should_implement_trait)]
    pub fn mul(self, y: Dd) -> Dd {
        let (p, e) = two_prod(self.hi, y.hi);
        let m = self.lo * y.hi;
        let t = self.hi.mul_add(y.lo, m);
        let (hi, lo) = two_sum(p, e + t);
        Dd { hi, lo }
    }

    /// An upper bound on |hi + lo| in f64.
    #[inline]
    pub fn abs_upper(self) -> f64 {
        (self.hi.abs() + self.lo.abs()).next_up()
    }

    pub fn is_finite(self) -> bool {
        self.hi.is_finite() && self.lo.is_finite()
    }
}

impl Neg for Dd {
    type Output = Dd;
    #[inline(always)]
    fn neg(self) -> Dd {
        Dd {
            hi: -self.hi,
            lo: -self.lo,
        }
    }
}

impl Add for Dd {
    type Output = Dd;
    #[inline(always)]
    fn add(self, y: Dd) -> Dd {
        Dd::add(self, y)
    }
}

impl Sub for Dd {
    type Output = Dd;
    #[inline(always)]
    fn sub(self, y: Dd) -> Dd {
        Dd::sub(self, y)
    }
}

impl Mul for Dd {
    type Output = Dd;
    #[inline(always)]
    fn mul(self, y: Dd) -> Dd {
        Dd::mul(self, y)
    }
}

impl From<f64> for Dd {
    fn from(x: f64) -> Dd {
        Dd::from_f64(x)
    }
}

impl From<Dd> for f64 {
    fn from(x: Dd) -> f64 {
        x.to_f64()
    }
}

/// Exact sums of f64 as error-free expansions (for tests: the exact values that rounding errors
/// are measured against).
#[cfg(test)]
pub(crate) mod exact {
    use super::two_sum;

    /// An exact sum of f64 terms, kept as a list of components whose exact sum it is
    /// (Shewchuk's grow-expansion: every addition is a two_sum, nothing is rounded away).
    #[derive(Clone, Debug, Default)]
    pub struct Expansion(Vec<f64>);

    impl Expansion {
        pub fn new() -> Self {
            Self(Vec::new())
        }

        pub fn add(&mut self, x: f64) {
            let mut q = x;
            let mut out = Vec::with_capacity(self.0.len() + 1);
            for &h in &self.0 {
                let (s, e) = two_sum(q, h);
                if e != 0.0 {
                    out.push(e);
                }
                q = s;
            }
            if q != 0.0 {
                out.push(q);
            }
            self.0 = out;
        }

        pub fn add_product(&mut self, a: f64, b: f64) {
            let (p, e) = super::two_prod(a, b);
            self.add(p);
            self.add(e);
        }

        /// The value to about one rounding: components summed from the smallest up.
        pub fn value(&self) -> f64 {
            let mut c = self.0.clone();
            c.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
            c.iter().sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::exact::Expansion;
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// m·2^k for a random 53-bit integer m and k in `ks`, random sign.
    fn dyadic(rng: &mut StdRng, ks: std::ops::Range<i32>) -> (i64, i32, f64) {
        let m = (rng.random::<u64>() >> 11) as i64 | (1 << 52);
        let m = if rng.random::<bool>() { -m } else { m };
        let k = rng.random_range(ks);
        (m, k, m as f64 * 2f64.powi(k))
    }

    /// x·2^s as an i128, asserting it is an integer (exact for |x·2^s| < 2^127).
    fn scaled_int(x: f64, s: i32) -> i128 {
        let y = x * 2f64.powi(s);
        assert_eq!(y, y.trunc(), "{x:e}·2^{s} is not an integer");
        y as i128
    }

    /// two_sum: a + b = s + e exactly, checked in integers (all four are multiples of 2^-60
    /// below 2^62, so ×2^60 maps them to i128 exactly), across aligned, overlapping and
    /// far-apart exponents and opposite signs.
    #[test]
    fn two_sum_is_exact() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20000 {
            let (_, _, a) = dyadic(&mut rng, -60..9);
            let (_, _, b) = dyadic(&mut rng, -60..9);
            let (s, e) = two_sum(a, b);
            assert_eq!(s, a + b);
            assert_eq!(
                scaled_int(a, 60) + scaled_int(b, 60),
                scaled_int(s, 60) + scaled_int(e, 60),
                "{a:e} + {b:e}"
            );
            assert!(e.abs() <= U * s.abs(), "|e| ≤ u|s|");
        }
        // Total cancellation and a zero operand.
        assert_eq!(two_sum(1.5, -1.5), (0.0, 0.0));
        assert_eq!(two_sum(0.0, 3.0), (3.0, 0.0));
    }

    /// two_prod: ab = p + e exactly, checked in integers: with a = m_a·2^k_a, b = m_b·2^k_b the
    /// product is m_a·m_b·2^(k_a+k_b) (m_a·m_b < 2^106), and p, e are multiples of 2^(k_a+k_b).
    #[test]
    fn two_prod_is_exact() {
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..20000 {
            let (ma, ka, a) = dyadic(&mut rng, -80..40);
            let (mb, kb, b) = dyadic(&mut rng, -80..40);
            let (p, e) = two_prod(a, b);
            assert_eq!(p, a * b);
            let s = -(ka + kb);
            assert_eq!(
                ma as i128 * mb as i128,
                scaled_int(p, s) + scaled_int(e, s),
                "{a:e}·{b:e}"
            );
        }
    }

    /// A sum that f64 rounds to 0 is exact in double-double.
    #[test]
    fn cancellation_sum_is_exact_in_double_double() {
        let big = 2f64.powi(53);
        let terms = [big, 1.0, -big, 0.5, 2f64.powi(-80), -0.5];
        let f: f64 = terms[..3].iter().sum();
        assert_eq!(f, 0.0, "f64: (2^53 + 1) − 2^53 = 0");
        let d = terms.iter().fold(Dd::ZERO, |acc, &t| acc + Dd::from_f64(t));
        assert_eq!((d.hi, d.lo), (1.0, 2f64.powi(-80)), "{d:?}");
        // Exact products cancel too: (1 + 2^-30)² − (1 + 2^-29) = 2^-60.
        let x = 1.0 + 2f64.powi(-30);
        let d = Dd::from_product(x, x) - Dd::from_f64(1.0 + 2f64.powi(-29));
        assert_eq!(x * x - (1.0 + 2f64.powi(-29)), 0.0);
        assert_eq!((d.hi, d.lo), (2f64.powi(-60), 0.0));
    }

    /// A random normalised double-double with hi = m·2^k, magnitudes spread over `ks`.
    fn random_dd(rng: &mut StdRng, ks: std::ops::Range<i32>) -> Dd {
        let (_, k, hi) = dyadic(rng, ks);
        let lo = (rng.random::<f64>() - 0.5) * 2f64.powi(k + 52 - 53);
        let (hi, lo) = two_sum(hi, lo);
        Dd { hi, lo }
    }

    fn exact_error(result: Dd, exact: &Expansion) -> f64 {
        let mut e = exact.clone();
        e.add(-result.hi);
        e.add(-result.lo);
        e.value().abs()
    }

    /// add/sub: the error, measured exactly, is ≤ 4u²(|x| + |y|) (the module doc's bound; U_DD
    /// is 16× that), including near-total cancellation (y ≈ −x).
    #[test]
    fn add_error_within_bound() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut worst: f64 = 0.0;
        for case in 0..50000 {
            let x = random_dd(&mut rng, -20..20);
            let y = match case % 3 {
                0 => random_dd(&mut rng, -20..20),
                // Cancellation in the high parts, different low parts.
                1 => {
                    let z = random_dd(&mut rng, -40..-30);
                    Dd { hi: -x.hi, lo: 0.0 } + z
                }
                _ => Dd {
                    hi: -x.hi,
                    lo: (rng.random::<f64>() - 0.5) * x.hi.abs() * U,
                },
            };
            let (yh, yl) = two_sum(y.hi, y.lo);
            let y = Dd { hi: yh, lo: yl };
            let mut exact = Expansion::new();
            for t in [x.hi, x.lo, y.hi, y.lo] {
                exact.add(t);
            }
            let scale = (x.hi.abs() + x.lo.abs()) + (y.hi.abs() + y.lo.abs());
            let err = exact_error(x + y, &exact);
            worst = worst.max(err / scale);
            assert!(err <= 4.0 * U * U * scale, "{x:?} + {y:?}: {err:e}");
            let r = x - y;
            let mut exact = Expansion::new();
            for t in [x.hi, x.lo, -y.hi, -y.lo] {
                exact.add(t);
            }
            assert!(exact_error(r, &exact) <= 4.0 * U * U * scale);
            assert!(r.lo.abs() <= U * r.hi.abs(), "normalised");
        }
        assert!(
            worst > 0.1 * U * U,
            "the test exercised rounding: {worst:e}"
        );
    }

    /// mul: the error, measured exactly (the four partial products by two_prod), is ≤ 8u²|xy|.
    #[test]
    fn mul_error_within_bound() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut worst: f64 = 0.0;
        for _ in 0..50000 {
            let x = random_dd(&mut rng, -40..40);
            let y = random_dd(&mut rng, -40..40);
            let r = x * y;
            let mut exact = Expansion::new();
            for (a, b) in [(x.hi, y.hi), (x.hi, y.lo), (x.lo, y.hi), (x.lo, y.lo)] {
                exact.add_product(a, b);
            }
            let xy = exact.value().abs();
            let err = exact_error(r, &exact);
            worst = worst.max(err / xy);
            assert!(err <= 8.0 * U * U * xy, "{x:?}·{y:?}: {:e}", err / xy);
            assert!(r.lo.abs() <= U * r.hi.abs(), "normalised");
            // Times an f64 (lo = 0) is the same operation.
            let f = Dd::from_f64(y.hi);
            let mut exact = Expansion::new();
            exact.add_product(x.hi, y.hi);
            exact.add_product(x.lo, y.hi);
            assert!(exact_error(x * f, &exact) <= 8.0 * U * U * exact.value().abs());
        }
        assert!(
            worst > 0.5 * U * U,
            "the test exercised rounding: {worst:e}"
        );
    }
}
