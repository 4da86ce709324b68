//! Packed batches: every (text, sample) sequence occupies consecutive rows, no padding.

/// One sequence of a packed batch: a text's tokens under one MC sample's masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq {
    /// Index of the text in the caller's batch.
    pub text: usize,
    /// MC sample index (0 in deterministic mode).
    pub sample: u32,
    /// First row in the packed buffer.
    pub row0: usize,
    /// Number of tokens.
    pub len: usize,
}

/// The sequences of one chunk of work and, per row, its sequence and token position.
#[derive(Clone, Debug, Default)]
pub struct Packing {
    /// Sequences in row order.
    pub seqs: Vec<Seq>,
    /// Per row: token position inside its sequence.
    pub row_pos: Vec<u32>,
    /// Per row: index into `seqs`.
    pub row_seq: Vec<u32>,
}

impl Packing {
    /// Packs `(text, sample, len)` triples in order.
    pub fn new(items: impl IntoIterator<Item = (usize, u32, usize)>) -> Self {
        let mut p = Packing::default();
        for (text, sample, len) in items {
            let row0 = p.row_pos.len();
            let si = p.seqs.len() as u32;
            p.seqs.push(Seq {
                text,
                sample,
                row0,
                len,
            });
            p.row_pos.extend(0..len as u32);
            p.row_seq.extend(std::iter::repeat_n(si, len));
        }
        p
    }

    /// Total rows.
    pub fn rows(&self) -> usize {
        self.row_pos.len()
    }

    /// Longest sequence (for RoPE tables).
    pub fn max_len(&self) -> usize {
        self.seqs.iter().map(|s| s.len).max().unwrap_or(0)
    }
}

/// Splits the work of `lens.len()` texts x the MC samples `samples` into chunks of at most `max_rows`
/// rows (a single sequence longer than that is a chunk of its own). Order: text-major,
/// samples in order; chunking never changes any number, only peak memory.
pub fn chunks(
    lens: &[usize],
    samples: std::ops::Range<u32>,
    max_rows: usize,
) -> Vec<Vec<(usize, u32, usize)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut rows = 0;
    for (t, &len) in lens.iter().enumerate() {
        for s in samples.clone() {
            if rows + len > max_rows && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
                rows = 0;
            }
            cur.push((t, s, len));
            rows += len;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Splits texts (by length) into consecutive groups of at most `max_rows` tokens in all (a
/// text longer than that is a group of its own): the texts whose stage A runs together.
pub fn text_groups(lens: &[usize], max_rows: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (t, &len) in lens.iter().enumerate() {
        if rows + len > max_rows && t > start {
            out.push(start..t);
            (start, rows) = (t, 0);
        }
        rows += len;
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_and_chunks() {
        let p = Packing::new([(0, 0, 2), (1, 0, 3)]);
        assert_eq!(p.rows(), 5);
        assert_eq!(p.row_pos, vec![0, 1, 0, 1, 2]);
        assert_eq!(p.row_seq, vec![0, 0, 1, 1, 1]);
        assert_eq!(p.seqs[1].row0, 2);
        let c = chunks(&[3, 5], 0..2, 7);
        assert_eq!(
            c,
            vec![vec![(0, 0, 3), (0, 1, 3)], vec![(1, 0, 5)], vec![(1, 1, 5)]]
        );
        let c = chunks(&[10], 0..1, 4);
        assert_eq!(c, vec![vec![(0, 0, 10)]]);
        let c = chunks(&[10], 4..5, 4);
        assert_eq!(c, vec![vec![(0, 4, 10)]]);
        assert_eq!(
            text_groups(&[3, 4, 2, 9, 1], 7),
            vec![0..2, 2..3, 3..4, 4..5]
        );
        assert_eq!(text_groups(&[3, 4], 7), vec![0..2]);
        assert_eq!(text_groups(&[], 7), Vec::<std::ops::Range<usize>>::new());
    }
}
