//! Outward-rounded arithmetic on the certificate's bounds (step 6 of the argument in
//! [`super`]), the γ_k constants, and exact powers of two.

#[inline]
pub(super) fn add_up(a: f64, b: f64) -> f64 {
    (a + b).next_up()
}
#[inline]
pub(super) fn mul_up(a: f64, b: f64) -> f64 {
    (a * b).next_up()
}
#[inline]
pub(super) fn div_up(a: f64, b: f64) -> f64 {
    (a / b).next_up()
}
#[inline]
pub(super) fn sub_down(a: f64, b: f64) -> f64 {
    (a - b).next_down()
}
#[inline]
pub(super) fn mul_down(a: f64, b: f64) -> f64 {
    (a * b).next_down()
}

/// An upper bound on γ_k = ku/(1 − ku) (∞ when ku ≥ ½).
pub(super) fn gamma(k: usize, u: f64) -> f64 {
    if k == 0 {
        return 0.0;
    }
    let ku = mul_up(k as f64, u);
    if ku >= 0.5 {
        return f64::INFINITY;
    }
    div_up(ku, sub_down(1.0, ku))
}

/// An upper bound on g/(1 − g) (∞ when g ≥ ½).
pub(super) fn over_one_minus(g: f64) -> f64 {
    if g.is_nan() || g >= 0.5 {
        return f64::INFINITY;
    }
    div_up(g, sub_down(1.0, g))
}

/// E_U of step 4.
pub(super) fn underflow_term(n: usize, p: usize) -> f64 {
    let sqrt_p = (p as f64).sqrt().next_up();
    let count = add_up(add_up(add_up(p as f64, n as f64), sqrt_p), 2.0);
    mul_up(mul_up(n as f64, count), pow2(-1070))
}

/// 2^e as an f64 (−1074 ≤ e ≤ 1023).
pub(super) const fn pow2(e: i32) -> f64 {
    if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (e + 1074))
    }
}

/// x·2^e, in steps that stay in range (each exact unless the result leaves the normal range).
pub(super) fn ldexp(mut x: f64, mut e: i32) -> f64 {
    while e > 1000 {
        x *= pow2(1000);
        e -= 1000;
    }
    while e < -1000 {
        x *= pow2(-1000);
        e += 1000;
    }
    x * pow2(e)
}

/// The e with 2^(e−1) ≤ m < 2^e (m > 0 finite).
pub(super) fn binary_exponent(m: f64) -> i32 {
    let biased = ((m.to_bits() >> 52) & 0x7ff) as i32;
    if biased == 0 {
        binary_exponent(m * pow2(54)) - 54
    } else {
        biased - 1022
    }
}
