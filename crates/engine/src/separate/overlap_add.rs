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

/// Little-endian writer and reader of a pass's state, for checkpoints.
impl Pass {
    /// Append the state that changes as segments are added (the rest comes
    /// from the plan): next segment, finalised frame count, the overlap-add
    /// window and the queue of finalised frames.
    pub(super) fn save(&self, out: &mut Vec<u8>) {
        put_u64(out, self.base as u64);
        put_u64(out, self.len as u64);
        put_u64(out, self.chunks as u64);
        put_u64(out, self.next as u64);
        put_u64(out, self.acc_start as u64);
        put_f32s(out, self.acc.iter().copied(), self.acc.len());
        put_f32s(out, self.wsum.iter().copied(), self.wsum.len());
        put_f32s(out, self.queue.iter().copied(), self.queue.len());
    }

    /// Read what [`Pass::save`] wrote into this pass (made from the same
    /// plan), checking it against the plan: the same shift and length,
    /// `next` must be `expect_next`, the window must fit `k_n` values per
    /// frame and the queue must hold exactly the finalised frames of the
    /// mixture's `mix_frames` not yet `emitted`.
    pub(super) fn restore(
        &mut self,
        r: &mut &[u8],
        (stride, k_n, mix_frames): (usize, usize, usize),
        expect_next: usize,
        emitted: usize,
    ) -> Result<(), String> {
        let (base, len, chunks) = (get_u64(r)? as i64, get_u64(r)? as usize, get_u64(r)? as usize);
        if (base, len, chunks) != (self.base, self.len, self.chunks) {
            return Err("the saved state has other shifts or another length".into());
        }
        let next = get_u64(r)? as usize;
        let acc_start = get_u64(r)? as usize;
        let acc = get_f32s(r)?;
        let wsum = get_f32s(r)?;
        let queue = get_f32s(r)?;
        let want_start = match next {
            0 => 0,
            n if n < self.chunks => n * stride,
            _ => self.len,
        };
        if next != expect_next || next > self.chunks || acc_start != want_start {
            return Err(format!("pass at segment {next} of {} does not fit the schedule", self.chunks));
        }
        // Mixture frames this pass has finalised: pass frames [0, acc_start)
        // that fall inside the mixture.
        let lo = self.base.max(0);
        let hi = (self.base + acc_start as i64).min(mix_frames as i64);
        let finalised = (hi - lo).max(0) as usize;
        if acc.len() != wsum.len() * k_n
            || wsum.len() > self.len - acc_start
            || finalised < emitted
            || queue.len() != (finalised - emitted) * k_n
        {
            return Err("overlap-add window of the wrong shape".into());
        }
        self.next = next;
        self.acc_start = acc_start;
        self.acc = acc;
        self.wsum = wsum;
        self.queue = queue.into();
        Ok(())
    }
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_f32s(out: &mut Vec<u8>, values: impl Iterator<Item = f32>, len: usize) {
    put_u64(out, len as u64);
    out.reserve(len * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

pub(super) fn get_u64(r: &mut &[u8]) -> Result<u64, String> {
    let (head, rest) = r.split_first_chunk::<8>().ok_or("state cut short")?;
    *r = rest;
    Ok(u64::from_le_bytes(*head))
}

fn get_f32s(r: &mut &[u8]) -> Result<Vec<f32>, String> {
    let len = usize::try_from(get_u64(r)?).map_err(|_| "length out of range")?;
    let bytes = len.checked_mul(4).filter(|b| *b <= r.len()).ok_or("state cut short")?;
    let (data, rest) = r.split_at(bytes);
    *r = rest;
    Ok(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}
