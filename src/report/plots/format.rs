//! Numbers as text: [`fmt_g`] (a fixed number of significant digits, plain or scientific) for
//! axis labels, legends and the report's tables, and the `10⁻⁷` labels of log-axis decades.

/// `10^k` as text: plain for small k, `10⁻⁷` otherwise.
pub(super) fn decade_label(k: i32) -> String {
    if (-3..=4).contains(&k) {
        return fmt_g(10f64.powi(k), 3);
    }
    let sup: String = k
        .to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            _ => '⁹',
        })
        .collect();
    format!("10{sup}")
}

pub(super) fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// A number with `sig` significant digits, plain or in scientific notation (`2.5e-7`).
pub fn fmt_g(x: f64, sig: usize) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return "0".into();
    }
    let sig = sig.max(1);
    let e = x.abs().log10().floor() as i32;
    if !(-3..5).contains(&e) {
        let s = format!("{:.*e}", sig - 1, x);
        match s.split_once('e') {
            Some((m, ex)) => format!("{}e{ex}", trim_zeros(m)),
            None => s,
        }
    } else {
        let dec = (sig as i32 - 1 - e).max(0) as usize;
        trim_zeros(&format!("{x:.dec$}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(fmt_g(0.0, 3), "0");
        assert_eq!(fmt_g(2.5e-7, 3), "2.5e-7");
        assert_eq!(fmt_g(0.02, 3), "0.02");
        assert_eq!(fmt_g(1234.6, 3), "1235");
        assert_eq!(fmt_g(1.0e6, 3), "1e6");
        assert_eq!(fmt_g(f64::NAN, 3), "NaN");
        assert_eq!(decade_label(-7), "10⁻⁷");
        assert_eq!(decade_label(2), "100");
        assert_eq!(decade_label(12), "10¹²");
    }
}
