//! Arrays of fixed-size items inside a frame, without copying them out.
//!
//! A decoded message holds `Items::Wire` (a validated byte slice in network order that borrows
//! from the read buffer); a role that sends holds `Items::Host` (a slice of its own values). Both
//! read the same way, and encoding a `Host` array writes straight into the out buffer — so the
//! message path needs neither a `Vec` per message nor a copy into an intermediate buffer.

use byteorder::{BigEndian, ByteOrder};

/// A fixed-size value with a network encoding.
pub trait Item: Copy {
    const LEN: usize;
    fn read(bytes: &[u8]) -> Self;
    fn write(&self, bytes: &mut [u8]);
}

impl Item for u32 {
    const LEN: usize = 4;
    fn read(bytes: &[u8]) -> Self {
        BigEndian::read_u32(bytes)
    }
    fn write(&self, bytes: &mut [u8]) {
        BigEndian::write_u32(bytes, *self)
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Items<'a, T: Item> {
    /// Validated bytes from a frame: `len() * T::LEN` bytes exactly.
    Wire(&'a [u8]),
    Host(&'a [T]),
}

impl<'a, T: Item> Items<'a, T> {
    /// Views `bytes` as an array of `T`; `None` unless the length is a whole number of items.
    pub fn from_wire(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len().is_multiple_of(T::LEN) {
            Some(Items::Wire(bytes))
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Items::Wire(bytes) => bytes.len() / T::LEN,
            Items::Host(items) => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, index: usize) -> T {
        match self {
            Items::Wire(bytes) => T::read(&bytes[index * T::LEN..(index + 1) * T::LEN]),
            Items::Host(items) => items[index],
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        (0..self.len()).map(move |index| self.get(index))
    }

    pub fn encoded_len(&self) -> usize {
        self.len() * T::LEN
    }

    /// Writes the items in network order; `out` is exactly `encoded_len()` bytes.
    pub fn encode(&self, out: &mut [u8]) {
        assert_eq!(out.len(), self.encoded_len());
        match self {
            Items::Wire(bytes) => out.copy_from_slice(bytes),
            Items::Host(items) => {
                for (chunk, item) in out.chunks_exact_mut(T::LEN).zip(items.iter()) {
                    item.write(chunk);
                }
            }
        }
    }
}

impl Items<'_, u32> {
    /// Copies items `start..start + out.len()` into `out`: the bulk path, a byte-swapping copy
    /// the compiler vectorises, instead of one checked `get` per item.
    pub fn copy_to(&self, start: usize, out: &mut [u32]) {
        match self {
            Items::Wire(bytes) => {
                let bytes = &bytes[start * 4..(start + out.len()) * 4];
                for (value, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *value = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                }
            }
            Items::Host(items) => out.copy_from_slice(&items[start..start + out.len()]),
        }
    }
}

impl<T: Item + PartialEq> PartialEq for Items<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}
