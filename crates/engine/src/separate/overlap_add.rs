//! Overlap-add of segment outputs within one shift pass, and the average of
//! the passes (`apply.py`: `out[..., offset:offset + segment] += weight *
//! chunk_out`, then `out /= sum_weight`, then the mean over shifts).

use std::collections::VecDeque;

use super::plan::Step;

/// One shift pass: its overlap-add window and its finished frames.
///
/// Frames are counted in pass frames (pass frame 0 is mixture frame
/// `base`); the window holds only the frames some later segment may still
/// add to, so memory is about one segment plus one stride per pass.
pub(super) struct Pass {
    /// Mixture frame of pass frame 0 (negative with a shift).
    base: i64,
    /// Pass length in frames.
    len: usize,
    /// Segments in the pass.
    chunks: usize,
    /// Next segment to run.
    next: usize,
    /// Pass frame of `acc[0]`; everything before is finalised.
    acc_start: usize,
    /// Frame-interleaved `[frame][source * channels]` weighted sums.
    acc: Vec<f32>,
    /// Sum of weights per frame of `acc`.
    wsum: Vec<f32>,
    /// Finalised mixture frames not yet combined, frame-interleaved
    /// `[frame][source * channels]`.
    queue: VecDeque<f32>,
}

impl Pass {
    pub(super) fn new(base: i64, len: usize, chunks: usize) -> Self {
        Pass { base, len, chunks, next: 0, acc_start: 0, acc: Vec::new(), wsum: Vec::new(), queue: VecDeque::new() }
    }

    /// Add the network output of `chunk` (the pass's next segment; planar
    /// `[k_n][l]`, the chunk's frames at offset `lead`) weighted by `weight`,
    /// then finalise every frame no later segment reaches and queue those
    /// inside the mixture's `mix_frames` frames.
    pub(super) fn add(
        &mut self,
        chunk: Step,
        stride: usize,
        out_wave: &[f32],
        (k_n, l, lead): (usize, usize, usize),
        weight: &[f32],
        mix_frames: usize,
    ) {
        debug_assert_eq!(chunk.start, self.next * stride, "segments of a pass arrive in order");
        let need = (chunk.start + chunk.len - self.acc_start) * k_n;
        if self.acc.len() < need {
            self.acc.resize(need, 0.0);
            self.wsum.resize(need / k_n, 0.0);
        }
        let rel = chunk.start - self.acc_start;
        for j in 0..chunk.len {
            let w = weight[j];
            let dst = &mut self.acc[(rel + j) * k_n..][..k_n];
            for (k, d) in dst.iter_mut().enumerate() {
                *d += w * out_wave[k * l + lead + j];
            }
            self.wsum[rel + j] += w;
        }
        self.next += 1;
        let final_upto = if self.next < self.chunks { self.next * stride } else { self.len };
        let count = final_upto - self.acc_start;
        for j in 0..count {
            let x = self.acc_start as i64 + j as i64 + self.base;
            if x >= 0 && (x as usize) < mix_frames {
                let w = self.wsum[j];
                self.queue.extend(self.acc[j * k_n..(j + 1) * k_n].iter().map(|v| v / w));
            }
        }
        self.acc.drain(..count * k_n);
        self.wsum.drain(..count);
        self.acc_start = final_upto;
    }
}

/// Average the frames every pass has finalised into `block` (planar
/// `[k_n][ready]`), de-normalised as `v * scale + mean`, and return `ready`
/// (0 when some pass has nothing new).
pub(super) fn combine(passes: &mut [Pass], k_n: usize, (scale, mean): (f32, f32), block: &mut Vec<f32>) -> usize {
    let ready = passes.iter().map(|p| p.queue.len() / k_n).min().unwrap_or(0);
    if ready == 0 {
        return 0;
    }
    block.clear();
    block.resize(k_n * ready, 0.0);
    let inv_passes = 1.0 / passes.len() as f32;
    for p in passes.iter_mut() {
        for (j, v) in p.queue.drain(..ready * k_n).enumerate() {
            let (frame, k) = (j / k_n, j % k_n);
            block[k * ready + frame] += v;
        }
    }
    for v in block.iter_mut() {
        *v = *v * inv_passes * scale + mean;
    }
    ready
}
