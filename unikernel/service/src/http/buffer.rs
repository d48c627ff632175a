//! A byte FIFO for a connection's input and output.

use std::collections::TryReserveError;

/// Capacity a drained buffer keeps; anything beyond is returned to the allocator.
const RETAINED_CAPACITY: usize = 16 << 10;

/// Bytes appended at the back and consumed from the front.
///
/// Consuming only advances an offset; the consumed prefix is dropped lazily
/// when it is at least half the buffer, so appending and consuming are
/// amortized O(1) per byte. Offsets into [`as_slice`](Self::as_slice) stay
/// valid across appends.
#[derive(Debug, Default)]
pub(crate) struct ByteQueue {
    buf: Vec<u8>,
    start: usize,
}

impl ByteQueue {
    /// The unconsumed bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    /// Number of unconsumed bytes.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops `n` bytes (at most all) from the front.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.clear();
        }
    }

    /// Drops everything, releasing memory beyond [`RETAINED_CAPACITY`].
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.buf.shrink_to(RETAINED_CAPACITY);
        self.start = 0;
    }

    /// Appends `bytes`.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.writer().extend_from_slice(bytes);
    }

    /// The underlying vector, to append to. Appending is all a caller may do.
    pub(crate) fn writer(&mut self) -> &mut Vec<u8> {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        &mut self.buf
    }

    /// Makes room for `additional` more bytes without reallocating later;
    /// fails instead of aborting when memory is short.
    pub(crate) fn try_reserve(&mut self, additional: usize) -> Result<(), TryReserveError> {
        self.writer().try_reserve_exact(additional)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_fifo() {
        let mut queue = ByteQueue::default();
        queue.extend(b"hello ");
        queue.extend(b"world");
        assert_eq!(queue.as_slice(), b"hello world");
        queue.consume(6);
        assert_eq!(queue.as_slice(), b"world");
        queue.extend(b"!");
        assert_eq!(queue.as_slice(), b"world!");
        assert_eq!(queue.len(), 6);
        queue.consume(100);
        assert!(queue.is_empty());
    }

    #[test]
    fn compacts_and_releases_memory() {
        let mut queue = ByteQueue::default();
        queue.extend(&[7; 1 << 20]);
        queue.consume((1 << 20) - 1);
        queue.extend(b"x");
        assert_eq!(queue.as_slice(), [7, b'x']);
        assert_eq!(queue.start, 0, "compacted before appending");
        queue.consume(2);
        assert!(queue.buf.capacity() <= RETAINED_CAPACITY);
    }
}
