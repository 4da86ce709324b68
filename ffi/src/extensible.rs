//! Structs that can grow: the `struct_size` prefix protocol of `EmcoderModelParams` and
//! `EmcoderPredictOptions`.
//!
//! Each such struct starts with `uint32_t struct_size`, the `sizeof` the caller compiled
//! against. Fields are only ever appended (each new one after the previous version's whole
//! `sizeof`, never in its tail padding), and a new field's zero means the old behaviour. So
//! the library reads exactly the fields that lie entirely within `struct_size` bytes and
//! gives the others their defaults; it never reads a byte past `struct_size`. A caller built
//! against an older, smaller struct keeps working with a newer library; a caller built
//! against a newer one checks `emcoder_abi_version() >= EMCODER_ABI_VERSION` first (bytes a
//! library does not know are ignored).

use std::mem::size_of;
use std::ptr;

/// A `#[repr(C)]` struct of the protocol: `struct_size` (u32) first, then plain-data fields
/// (integers, floats, raw pointers: any bit pattern is a valid value).
///
/// # Safety
/// Implementors are `#[repr(C)]`, start with a `u32` field `struct_size`, hold only fields
/// for which every bit pattern is valid, and `FIELD_ENDS` lists the end offset
/// (`offset_of + size_of`) of every field in increasing order.
pub(crate) unsafe trait Extensible: Copy {
    /// The end offset of each field, in declaration order.
    const FIELD_ENDS: &'static [usize];
    /// The `sizeof` of the ABI 2 layout: what `struct_size` 0 (a zero-initialized struct)
    /// stands for. Frozen: later versions keep it.
    const SIZE_ABI2: usize;
    /// The defaults (`struct_size` is overwritten).
    fn defaults() -> Self;
}

/// The bytes of `T`'s fields that fit in `struct_size` bytes: the end of the last field
/// lying entirely within them.
fn prefix_len<T: Extensible>(struct_size: usize) -> usize {
    T::FIELD_ENDS
        .iter()
        .copied()
        .take_while(|&end| end <= struct_size)
        .last()
        .unwrap_or(0)
}

/// Reads a caller's struct: the fields within its `struct_size` (0: the ABI 2 size) come
/// from `src`, the others are the defaults. The result's `struct_size` is the caller's.
///
/// # Safety
/// `src` points to a readable, aligned struct of at least 4 bytes whose first field is
/// `struct_size`, and to at least `struct_size` readable bytes (the ABI 2 size when it is
/// 0).
pub(crate) unsafe fn read<T: Extensible>(src: *const T) -> T {
    // SAFETY: `src` is aligned and readable for its first u32, per the contract.
    let declared = unsafe { ptr::read(src.cast::<u32>()) };
    let size = match declared as usize {
        0 => T::SIZE_ABI2,
        n => n,
    };
    let n = prefix_len::<T>(size).min(size_of::<T>());
    let mut out = T::defaults();
    // SAFETY: `n` <= size_of::<T>() and <= the caller's size; byte copies between two
    // distinct structs of plain data (any bit pattern is valid, per the trait's contract).
    unsafe { ptr::copy_nonoverlapping(src.cast::<u8>(), ptr::addr_of_mut!(out).cast::<u8>(), n) };
    // SAFETY: `struct_size` is the first field, a u32 (the trait's contract).
    unsafe { ptr::write(ptr::addr_of_mut!(out).cast::<u32>(), declared) };
    out
}

/// Writes the defaults into a caller's struct of `struct_size` bytes: the fields that fit,
/// and `struct_size` itself; nothing past `struct_size`. Sizes under 4 write nothing.
///
/// # Safety
/// `dst` is NULL or points to `struct_size` writable, aligned bytes.
pub(crate) unsafe fn init<T: Extensible>(dst: *mut T, struct_size: u32) {
    if dst.is_null() || (struct_size as usize) < size_of::<u32>() {
        return;
    }
    let n = prefix_len::<T>(struct_size as usize).min(size_of::<T>());
    let defaults = T::defaults();
    // SAFETY: `n` <= struct_size bytes writable at `dst` (contract) and <= size_of::<T>().
    unsafe {
        ptr::copy_nonoverlapping(ptr::addr_of!(defaults).cast::<u8>(), dst.cast::<u8>(), n);
        ptr::write(dst.cast::<u32>(), struct_size);
    }
}

/// The end offsets of a struct's fields, for [`Extensible::FIELD_ENDS`].
macro_rules! field_ends {
    ($t:ty { $($field:ident: $ft:ty),* $(,)? }) => {
        &[$(::std::mem::offset_of!($t, $field) + ::std::mem::size_of::<$ft>()),*]
    };
}
pub(crate) use field_ends;

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct S {
        struct_size: u32,
        a: u32,
        b: u64,
        c: u8,
        d: u64,
    }

    // SAFETY: repr(C), struct_size first, plain data, ends in order.
    unsafe impl Extensible for S {
        const FIELD_ENDS: &'static [usize] = field_ends!(S {
            struct_size: u32,
            a: u32,
            b: u64,
            c: u8,
            d: u64
        });
        const SIZE_ABI2: usize = 24;
        fn defaults() -> Self {
            S {
                struct_size: size_of::<S>() as u32,
                a: 1,
                b: 2,
                c: 3,
                d: 4,
            }
        }
    }

    #[test]
    fn reads_only_the_fields_within_struct_size() {
        assert_eq!(S::FIELD_ENDS, &[4, 8, 16, 17, 32]);
        let caller = |size| S {
            struct_size: size,
            a: 10,
            b: 20,
            c: 30,
            d: 40,
        };
        // SAFETY: every source is a whole S.
        unsafe {
            let full = read(&caller(32));
            assert_eq!((full.a, full.b, full.c, full.d), (10, 20, 30, 40));
            // 24 bytes: `c` fits (ends at 17), `d` does not.
            let old = read(&caller(24));
            assert_eq!(
                (old.struct_size, old.a, old.b, old.c, old.d),
                (24, 10, 20, 30, 4)
            );
            // 0: the ABI 2 size (24 here).
            assert_eq!(read(&caller(0)).d, 4);
            assert_eq!(read(&caller(0)).c, 30);
            // A size in the middle of a field: that field keeps its default.
            assert_eq!(read(&caller(12)).b, 2);
            // Larger than known: the known fields only.
            assert_eq!(read(&caller(4096)).d, 40);
        }
    }

    #[test]
    fn init_writes_nothing_past_struct_size() {
        let mut s = S {
            struct_size: 0,
            a: 0,
            b: 0,
            c: 0,
            d: 99,
        };
        // SAFETY: `s` is a whole S.
        unsafe {
            init(&mut s, 17);
            assert_eq!((s.struct_size, s.a, s.b, s.c, s.d), (17, 1, 2, 3, 99));
            init(&mut s, 2);
            assert_eq!(s.struct_size, 17);
            init(ptr::null_mut::<S>(), 32);
            init(&mut s, 32);
            assert_eq!(s, S::defaults());
        }
    }
}
