//! The raw output pointer that the parallel tasks of a product share.

/// An output buffer's base pointer, shared by parallel tasks that each write a disjoint
/// block of it (row ranges x column tiles or panels): no two tasks touch the same element,
/// and the buffer outlives the parallel pass.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);

impl OutPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: tasks write disjoint blocks of one output buffer (see the type's doc).
unsafe impl Send for OutPtr {}
// SAFETY: as above; no two tasks touch the same element.
unsafe impl Sync for OutPtr {}
