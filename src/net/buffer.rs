//! A fixed-capacity byte buffer: data lives in `start..end`; reads land in the free tail in
//! place and frames are encoded into it in place. Capacity is fixed when the buffer is made, so
//! nothing on the message path allocates; `compact` moves the (usually small) unread rest to the
//! front once per batch of work, not per frame.

pub struct Buffer {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buffer {
    pub fn with_capacity(capacity: usize) -> Buffer {
        Buffer {
            bytes: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// A zero-capacity placeholder (no allocation), for taking a buffer out of a connection.
    pub fn empty() -> Buffer {
        Buffer {
            bytes: Box::new([]),
            start: 0,
            end: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.bytes.len()
    }

    pub fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// The unread bytes, writable (a parser may rewrite what it parses in place).
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, count: usize) {
        assert!(count <= self.len());
        self.start += count;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Free space after the data (without compacting).
    pub fn tail(&mut self) -> &mut [u8] {
        &mut self.bytes[self.end..]
    }

    /// Marks `count` bytes of the tail as data.
    pub fn commit(&mut self, count: usize) {
        assert!(self.end + count <= self.bytes.len());
        self.end += count;
    }

    /// Moves the data to the front so that all free space is in the tail.
    pub fn compact(&mut self) {
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// A tail of at least `count` bytes, compacting if that makes room; `None` if the buffer
    /// cannot hold `count` more bytes.
    pub fn reserve(&mut self, count: usize) -> Option<&mut [u8]> {
        if self.bytes.len() - self.end < count {
            if self.bytes.len() - self.len() < count {
                return None;
            }
            self.compact();
        }
        Some(&mut self.bytes[self.end..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_compacts_only_when_needed() {
        let mut buffer = Buffer::with_capacity(8);
        buffer.reserve(6).unwrap()[..6].copy_from_slice(b"abcdef");
        buffer.commit(6);
        buffer.consume(4);
        assert_eq!(buffer.data(), b"ef");
        assert!(buffer.reserve(7).is_none());
        buffer.reserve(6).unwrap()[..6].copy_from_slice(b"ghijkl");
        buffer.commit(6);
        assert_eq!(buffer.data(), b"efghijkl");
        buffer.consume(8);
        assert!(buffer.is_empty());
        assert_eq!(buffer.tail().len(), 8);
    }
}
