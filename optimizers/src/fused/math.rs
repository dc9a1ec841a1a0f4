//! Elementwise functions for the fused loops, written as plain arithmetic so that the compiler
//! vectorises them (a call to the C library's `expf` keeps the whole loop scalar).

/// `exp(x)` for `x ≤ 0`, within 2 ulp of the correctly rounded value (Cody–Waite range reduction
/// `x = n·ln 2 + r`, |r| ≤ ln2/2, and the degree-7 minimax polynomial of Cephes' `expf` for
/// `e^r`). Below −87.33 the result is clamped to `e^−87.33 ≈ 1.2e−38` (the smallest normal float)
/// instead of going subnormal; NaN gives the clamp value too.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| ≤ 127.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer (ties to even).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_54, 0.0);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let poly = ((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e_r = poly * r * r + r + 1.0;
    // 2ⁿ from its exponent bits; n ∈ [−126, 0] after the clamp. The low bits of `shifted`
    // (1.5·2²³ + n, whose ulp is 1) hold n in two's complement: integer ops only, no float → int
    // conversion (which the compiler does not vectorise).
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    e_r * two_n
}

#[cfg(test)]
mod tests {
    use super::exp_nonpositive;

    /// Distance in units in the last place (both finite, same sign).
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn matches_the_correctly_rounded_exp_within_two_ulp() {
        let mut worst = (0, 0.0f32);
        let mut x = 0.0f32;
        // Dense near 0 (where the friction of diffGrad lives), then out to the clamp.
        while x > -87.3 {
            let exact = (x as f64).exp() as f32;
            let d = ulps(exp_nonpositive(x), exact);
            if d > worst.0 {
                worst = (d, x);
            }
            x -= 1e-4 + x.abs() * 1e-4;
        }
        assert!(worst.0 <= 2, "{} ulp at x = {}", worst.0, worst.1);
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) > 0.0 && exp_nonpositive(-1000.0) < 1.2e-38);
    }
}
