//! Pure signal math: the STFT as `torch.stft` computes it and the padding
//! Demucs wraps around it (`demucs/spec.py`, `demucs/htdemucs.py`), and the
//! overlap-add weights of `demucs/apply.py`.

pub mod stft;
pub mod weights;

/// Index into `x` with PyTorch `F.pad(mode="reflect")` semantics (edge sample
/// not repeated), for any integer `i`. `len` must be at least 2 unless `i` is
/// inside `0..len`.
#[inline]
pub fn reflect_index(i: isize, len: usize) -> usize {
    let n = len as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut k = i.rem_euclid(period);
    if k >= n {
        k = period - k;
    }
    k as usize
}

#[cfg(test)]
mod tests {
    use super::reflect_index;

    #[test]
    fn reflect_matches_torch() {
        // torch: F.pad(tensor([0,1,2,3]), (3,3), mode="reflect") = [3,2,1,0,1,2,3,2,1,0]
        let got: Vec<usize> = (-3..7).map(|i| reflect_index(i, 4)).collect();
        assert_eq!(got, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }
}
