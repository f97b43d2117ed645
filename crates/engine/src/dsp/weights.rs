//! The triangular overlap-add weight of `demucs/apply.py`:
//! `cat([arange(1, segment // 2 + 1), arange(segment - segment // 2, 0, -1)])`,
//! divided by its maximum, raised to `transition_power` (1 in Demucs).

/// Weight of every frame of a segment of `segment` frames; peak 1.0.
///
/// Frame `i` gets `i + 1` for `i < segment / 2` and `segment - i` after, over
/// the maximum. (bakkot/demucs-js puts its peak one frame later; Demucs does not.)
pub fn triangle(segment: usize) -> Vec<f32> {
    let half = segment / 2;
    let raw: Vec<f64> = (0..segment).map(|i| if i < half { (i + 1) as f64 } else { (segment - i) as f64 }).collect();
    let max = raw.iter().cloned().fold(0.0, f64::max).max(1.0);
    raw.iter().map(|w| (w / max) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::triangle;

    #[test]
    fn matches_demucs_arange_formula() {
        // segment 6: [1,2,3] ++ [3,2,1], / 3
        let w = triangle(6);
        let want = [1.0, 2.0, 3.0, 3.0, 2.0, 1.0].map(|v: f32| v / 3.0);
        assert_eq!(w.len(), 6);
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-7);
        }
        // segment 5: [1,2] ++ [3,2,1], / 3
        let w = triangle(5);
        let want = [1.0, 2.0, 3.0, 2.0, 1.0].map(|v: f32| v / 3.0);
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-7);
        }
    }

    #[test]
    fn htdemucs_segment_peaks_in_the_middle() {
        let w = triangle(343_980);
        assert_eq!(w.len(), 343_980);
        assert_eq!(w[171_989], 1.0);
        assert_eq!(w[171_990], 1.0);
        assert!((w[0] - 1.0 / 171_990.0).abs() < 1e-9);
        assert!((w[343_979] - 1.0 / 171_990.0).abs() < 1e-9);
        assert!(w.iter().all(|v| *v > 0.0 && *v <= 1.0));
    }
}
