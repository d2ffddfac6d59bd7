//! Numeric conversions the compiler cannot prove lossless, made in one place and saturating, so no
//! `as` cast truncates silently (the crate denies `clippy::cast_possible_truncation`): durations
//! to milliseconds, rounded floats to integers, wide integers to narrow ones.

use std::time::Duration;

/// `d` in whole milliseconds (`u64::MAX` for a duration of over 584 million years).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `x` rounded to the nearest integer, saturating at the type's bounds; NaN is 0.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn round_u64(x: f64) -> u64 {
    // A float-to-integer `as` saturates and maps NaN to 0 (defined behaviour since Rust 1.45):
    // exactly the conversion wanted, named here once.
    x.round() as u64
}

/// `x` rounded to the nearest integer, saturating; NaN is 0.
#[allow(clippy::cast_possible_truncation)]
pub fn round_i64(x: f64) -> i64 {
    // As in `round_u64`: saturating, NaN to 0.
    x.round() as i64
}

/// `x` rounded down, saturating at `usize`'s bounds; NaN is 0.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn floor_usize(x: f64) -> usize {
    // As in `round_u64`: saturating, NaN to 0.
    x.floor() as usize
}

/// `x`, or `u32::MAX` when it does not fit.
pub fn u32_saturating(x: u64) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

/// `x`, or `usize::MAX` when it does not fit (32-bit targets).
pub fn usize_saturating(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

/// The low 32 bits of `x` (a hash folded to 32 bits: the truncation is the point).
pub fn low_u32(x: u64) -> u32 {
    let b = x.to_le_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate_instead_of_wrapping() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(round_u64(2.5), 3);
        assert_eq!(round_u64(-4.0), 0);
        assert_eq!(round_u64(f64::NAN), 0);
        assert_eq!(round_u64(1e30), u64::MAX);
        assert_eq!(round_i64(-2.6), -3);
        assert_eq!(floor_usize(3.9), 3);
        assert_eq!(u32_saturating(u64::from(u32::MAX) + 1), u32::MAX);
        assert_eq!(usize_saturating(7), 7);
        assert_eq!(low_u32(0x1_2345_6789), 0x2345_6789);
    }
}
