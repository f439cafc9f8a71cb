//! Redis's rules for strings that hold numbers: which stored strings INCR
//! accepts as integers, and how INCRBYFLOAT adds and prints.
//!
//! Apply calls these on the stored payload and the replicated increment, so
//! they must be deterministic: integer parsing is exact, and INCRBYFLOAT adds
//! in exact decimal whenever both operands are plain decimals (what clients
//! send in practice), falling back to IEEE f64 only for magnitudes decimal
//! cannot hold. Redis computes in C `long double` and prints 17 fractional
//! digits; exact decimal gives the same text in the common cases (`0.1 + 0.2`
//! is `0.3`) without depending on the platform's `long double`.

/// Parses a stored string as an integer exactly as Redis's `string2ll`: an
/// optional `-`, no leading zeros, no `+`, no spaces, within i64.
#[must_use]
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    if b == b"0" {
        return Some(0);
    }
    let (negative, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        // Accumulating negatively reaches i64::MIN without overflow.
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(d)?
        } else {
            value.checked_add(d)?
        };
    }
    Some(value)
}

/// Why an INCRBYFLOAT cannot be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatError {
    /// `ERR value is not a valid float` (the stored value or the increment).
    NotAFloat,
    /// `ERR increment would produce NaN or Infinity`.
    NotFinite,
}

/// Parses a float as Redis's `string2ld`: no leading space, nothing after
/// the number, not NaN. Infinity parses (and then fails as not finite).
#[must_use]
pub fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    if v.is_nan() {
        return None;
    }
    Some(v)
}

/// Adds `delta` to `current` (both as text) and returns the new text, as
/// INCRBYFLOAT stores and replies it.
///
/// # Errors
/// [`FloatError`] when either side is not a float or the sum is not finite.
pub fn add_floats(current: &[u8], delta: &[u8]) -> Result<String, FloatError> {
    let a = parse_f64(current).ok_or(FloatError::NotAFloat)?;
    let b = parse_f64(delta).ok_or(FloatError::NotAFloat)?;
    let sum = a + b;
    if !sum.is_finite() {
        return Err(FloatError::NotFinite);
    }
    if let (Some(x), Some(y)) = (Decimal::parse(current), Decimal::parse(delta)) {
        if let Some(text) = x.checked_add(y).and_then(Decimal::to_redis_text) {
            return Ok(text);
        }
    }
    Ok(format!("{sum}"))
}

/// An exact decimal `mantissa * 10^exponent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    mantissa: i128,
    exponent: i32,
}

/// Redis prints INCRBYFLOAT results with 17 fractional digits, then trims.
const FRACTION_DIGITS: i32 = 17;

impl Decimal {
    /// Parses `[+-]digits[.digits][(e|E)[+-]digits]`; `None` for anything
    /// else (hex, inf) or more digits than i128 holds.
    fn parse(b: &[u8]) -> Option<Decimal> {
        let (negative, mut rest) = match b.split_first() {
            Some((b'-', r)) => (true, r),
            Some((b'+', r)) => (false, r),
            _ => (false, b),
        };
        let mut mantissa: i128 = 0;
        let mut exponent: i32 = 0;
        let mut digits = 0;
        let mut seen_point = false;
        while let Some((&c, r)) = rest.split_first() {
            match c {
                b'0'..=b'9' => {
                    mantissa = mantissa
                        .checked_mul(10)?
                        .checked_add(i128::from(c - b'0'))?;
                    digits += 1;
                    if seen_point {
                        exponent -= 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                b'e' | b'E' => break,
                _ => return None,
            }
            rest = r;
        }
        if digits == 0 {
            return None;
        }
        if let Some((_, exp_text)) = rest.split_first() {
            let s = std::str::from_utf8(exp_text).ok()?;
            if s.is_empty() {
                return None;
            }
            let e: i32 = s.parse().ok()?;
            exponent = exponent.checked_add(e)?;
        }
        Some(Decimal {
            mantissa: if negative { -mantissa } else { mantissa },
            exponent,
        })
    }

    fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let exponent = self.exponent.min(other.exponent);
        let scale = |d: Decimal| -> Option<i128> {
            let shift = u32::try_from(d.exponent - exponent).ok()?;
            d.mantissa.checked_mul(10i128.checked_pow(shift)?)
        };
        Some(Decimal {
            mantissa: scale(self)?.checked_add(scale(other)?)?,
            exponent,
        })
    }

    /// `%.17Lf` with trailing zeros (and a trailing point) removed.
    fn to_redis_text(self) -> Option<String> {
        let Decimal {
            mut mantissa,
            mut exponent,
        } = self;
        if exponent >= 0 {
            let factor = 10i128.checked_pow(u32::try_from(exponent).ok()?)?;
            return Some(mantissa.checked_mul(factor)?.to_string());
        }
        if exponent < -FRACTION_DIGITS {
            let drop = u32::try_from(-FRACTION_DIGITS - exponent).ok()?;
            let divisor = 10i128.checked_pow(drop)?;
            let (q, r) = (mantissa / divisor, mantissa % divisor);
            // Round half away from zero, as printf does for exact halves
            // of a value it holds exactly.
            mantissa = if r.unsigned_abs() * 2 >= divisor.unsigned_abs() {
                q + mantissa.signum()
            } else {
                q
            };
            exponent = -FRACTION_DIGITS;
        }
        let frac = usize::try_from(-exponent).ok()?;
        let digits = mantissa.unsigned_abs().to_string();
        let padded = format!("{digits:0>width$}", width = frac + 1);
        let (int_part, frac_part) = padded.split_at(padded.len() - frac);
        let frac_part = frac_part.trim_end_matches('0');
        let sign = if mantissa < 0 { "-" } else { "" };
        Some(if frac_part.is_empty() {
            format!("{sign}{int_part}")
        } else {
            format!("{sign}{int_part}.{frac_part}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"007",
            b"+5",
            b" 1",
            b"1 ",
            b"1.0",
            b"9223372036854775808",
            b"abc",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn floats_add_like_redis() {
        let cases: &[(&[u8], &[u8], &str)] = &[
            (b"10.50", b"0.1", "10.6"),
            (b"10.6", b"-5", "5.6"),
            (b"5.0e3", b"2.0e2", "5200"),
            (b"0.1", b"0.2", "0.3"),
            (b"3", b"0", "3"),
            (b"1e2", b"1", "101"),
            (b"0", b"-0", "0"),
            (b"1", b"1.0000000000000000001", "2"),
            (b"0", b"1e-20", "0"),
            (b"0", b"0.00000000000000005", "0.00000000000000005"),
            (b"-1.5", b"0.25", "-1.25"),
            (b"0", b"+7", "7"),
        ];
        for (a, b, want) in cases {
            assert_eq!(add_floats(a, b).as_deref(), Ok(*want), "{a:?} + {b:?}");
        }
    }

    #[test]
    fn float_errors() {
        assert_eq!(add_floats(b"abc", b"1"), Err(FloatError::NotAFloat));
        assert_eq!(add_floats(b"1", b" 1"), Err(FloatError::NotAFloat));
        assert_eq!(add_floats(b"1", b"1 "), Err(FloatError::NotAFloat));
        assert_eq!(add_floats(b"", b"1"), Err(FloatError::NotAFloat));
        assert_eq!(add_floats(b"1", b"nan"), Err(FloatError::NotAFloat));
        assert_eq!(add_floats(b"0", b"inf"), Err(FloatError::NotFinite));
        assert_eq!(
            add_floats(b"1.7e308", b"1.7e308"),
            Err(FloatError::NotFinite)
        );
    }

    #[test]
    fn huge_magnitudes_fall_back_to_f64() {
        let text = add_floats(b"1e300", b"1").unwrap();
        assert!(text.starts_with("1000000000000000"), "{text}");
        assert_eq!(parse_f64(text.as_bytes()), Some(1e300));
    }
}
