//! Memory for master keys: locked in RAM where the OS allows it (so the keys are never written
//! to swap), left out of core dumps, and zeroized before it is unlocked and freed.
//!
//! This is the only module of the crate with `unsafe` code: `mlock`, `munlock`, `madvise` and
//! `sysconf` are foreign calls. Everything else here is safe Rust. Locking is best effort: a
//! low `RLIMIT_MEMLOCK` (`ulimit -l`) makes `mlock` fail, and then the keys are kept in
//! ordinary memory (still zeroized on drop) and [`KeySlots::lock_error`] says why.

use std::io;

use keepsync_core::budget::KEY_LEN;
use zeroize::Zeroize;

/// Fixed-size slots of [`KEY_LEN`] secret bytes, in pages that hold nothing else.
#[derive(Default)]
pub struct KeySlots {
    pages: Vec<Page>,
    used: usize,
    lock_error: Option<String>,
}

impl KeySlots {
    /// An empty store; pages are allocated (and locked) when the first slot is taken.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh zeroed slot; returns its index.
    pub fn push(&mut self) -> usize {
        let per_page = page_size() / KEY_LEN;
        if self.used == self.pages.len() * per_page {
            let (page, error) = Page::new();
            if let (Some(e), None) = (error, &self.lock_error) {
                self.lock_error = Some(e.to_string());
            }
            self.pages.push(page);
        }
        self.used += 1;
        self.used - 1
    }

    /// The bytes of slot `index`.
    ///
    /// # Panics
    /// If `index` was not returned by [`Self::push`].
    pub fn get(&self, index: usize) -> &[u8; KEY_LEN] {
        assert!(index < self.used, "key slot {index} was never taken");
        let per_page = page_size() / KEY_LEN;
        let at = (index % per_page) * KEY_LEN;
        self.pages[index / per_page].bytes()[at..at + KEY_LEN].try_into().expect("KEY_LEN bytes")
    }

    /// The bytes of slot `index`, to fill in.
    ///
    /// # Panics
    /// If `index` was not returned by [`Self::push`].
    pub fn get_mut(&mut self, index: usize) -> &mut [u8; KEY_LEN] {
        assert!(index < self.used, "key slot {index} was never taken");
        let per_page = page_size() / KEY_LEN;
        let at = (index % per_page) * KEY_LEN;
        let slot: &mut [u8] = &mut self.pages[index / per_page].bytes_mut()[at..at + KEY_LEN];
        slot.try_into().expect("KEY_LEN bytes")
    }

    /// Why the pages could not be locked in RAM (`None`: locked, or nothing stored yet).
    pub fn lock_error(&self) -> Option<&str> {
        self.lock_error.as_deref()
    }

    /// Whether every page holding keys is locked in RAM.
    pub fn is_locked(&self) -> bool {
        self.pages.iter().all(|p| p.locked)
    }
}

impl std::fmt::Debug for KeySlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySlots").field("used", &self.used).field("locked", &self.is_locked()).finish()
    }
}

/// One page of memory that no other allocation shares: the aligned page inside a buffer of two
/// pages. `munlock` works on whole pages and locks do not nest, so sharing a page with other
/// data could unlock someone else's secret, or lock someone else's data.
struct Page {
    buf: Vec<u8>,
    offset: usize,
    locked: bool,
}

impl Page {
    /// Allocates, locks (best effort) and excludes the page from core dumps; the error is why
    /// locking failed.
    fn new() -> (Self, Option<io::Error>) {
        let size = page_size();
        let mut buf = vec![0u8; 2 * size];
        let offset = buf.as_ptr().align_offset(size);
        let page = &mut buf[offset..offset + size];
        let locked = os::lock(page);
        os::exclude_from_core_dumps(page);
        (Self { buf, offset, locked: locked.is_ok() }, locked.err())
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.offset..self.offset + page_size()]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let size = page_size();
        &mut self.buf[self.offset..self.offset + size]
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // Zeroize first: once unlocked, the page may be swapped out.
        self.buf.as_mut_slice().zeroize();
        if self.locked {
            os::unlock(self.bytes_mut());
        }
    }
}

/// The size of a memory page (4 KiB on most machines, 16 or 64 KiB on some ARM systems).
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(os::page_size)
}

#[cfg(unix)]
mod os {
    use std::io;

    pub fn page_size() -> usize {
        // SAFETY: sysconf only reads a configuration value.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size).ok().filter(|s| s.is_power_of_two() && *s >= 4096).unwrap_or(4096)
    }

    pub fn lock(page: &mut [u8]) -> io::Result<()> {
        // SAFETY: the range is memory this process owns (a live, exclusively borrowed slice);
        // mlock does not read or write it.
        let rc = unsafe { libc::mlock(page.as_ptr().cast(), page.len()) };
        if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    pub fn unlock(page: &mut [u8]) {
        // SAFETY: as for lock; a failure leaves the page locked until exit, which is harmless.
        unsafe { libc::munlock(page.as_ptr().cast(), page.len()) };
    }

    #[cfg(target_os = "linux")]
    pub fn exclude_from_core_dumps(page: &mut [u8]) {
        // SAFETY: `page` is page-aligned and whole pages long, owned by this process; the
        // advice changes only whether a core dump includes it, never its contents.
        unsafe { libc::madvise(page.as_mut_ptr().cast(), page.len(), libc::MADV_DONTDUMP) };
    }

    #[cfg(not(target_os = "linux"))]
    pub fn exclude_from_core_dumps(_page: &mut [u8]) {}
}

#[cfg(not(unix))]
mod os {
    use std::io;

    pub fn page_size() -> usize {
        4096
    }

    pub fn lock(_page: &mut [u8]) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "memory locking is implemented for unix only"))
    }

    pub fn unlock(_page: &mut [u8]) {}

    pub fn exclude_from_core_dumps(_page: &mut [u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_separate_and_span_pages() {
        let mut slots = KeySlots::new();
        let per_page = page_size() / KEY_LEN;
        let n = per_page + 3;
        for i in 0..n {
            assert_eq!(slots.push(), i);
            slots.get_mut(i).fill(i as u8);
        }
        assert_eq!(slots.pages.len(), 2);
        for i in 0..n {
            assert_eq!(slots.get(i), &[i as u8; KEY_LEN], "slot {i}");
        }
        for page in &slots.pages {
            assert_eq!(page.bytes().as_ptr() as usize % page_size(), 0, "pages are aligned");
        }
    }

    #[test]
    fn pages_are_locked_unless_the_os_refuses() {
        let mut slots = KeySlots::new();
        slots.push();
        // Either locked, or the reason is recorded: never silently unlocked.
        assert_eq!(slots.is_locked(), slots.lock_error().is_none(), "{:?}", slots.lock_error());
        #[cfg(target_os = "linux")]
        if slots.is_locked() {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let locked_kib: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmLck:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap();
            assert!(locked_kib * 1024 >= page_size() as u64, "VmLck {locked_kib} kB");
        }
    }

    #[test]
    #[should_panic(expected = "never taken")]
    fn untaken_slots_are_refused() {
        let slots = KeySlots::new();
        let _ = slots.get(0);
    }
}
