//! A fixed-capacity slab: entries allocated once, indices recycled, no
//! allocation after construction.

pub(crate) struct Slab<T> {
    items: Vec<T>,
    used: Vec<bool>,
    free: Vec<u32>,
}

impl<T> Slab<T> {
    pub(crate) fn new(capacity: usize, mut make: impl FnMut() -> T) -> Slab<T> {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        Slab {
            items: (0..capacity).map(|_| make()).collect(),
            used: vec![false; capacity],
            free: (0..capacity as u32).rev().collect(),
        }
    }

    /// Takes a free entry; the caller initialises it.
    pub(crate) fn alloc(&mut self) -> Option<u32> {
        let i = self.free.pop()?;
        if let Some(u) = self.used.get_mut(i as usize) {
            *u = true;
        }
        Some(i)
    }

    /// Returns an entry.
    pub(crate) fn release(&mut self, i: u32) {
        if let Some(u) = self.used.get_mut(i as usize) {
            if *u {
                *u = false;
                self.free.push(i);
            }
        }
    }

    pub(crate) fn get(&self, i: u32) -> Option<&T> {
        if *self.used.get(i as usize)? {
            self.items.get(i as usize)
        } else {
            None
        }
    }

    pub(crate) fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        if *self.used.get(i as usize)? {
            self.items.get_mut(i as usize)
        } else {
            None
        }
    }

    pub(crate) fn in_use(&self) -> usize {
        self.items.len() - self.free.len()
    }

    pub(crate) fn available(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_release() {
        let mut s: Slab<u8> = Slab::new(2, || 0);
        let a = s.alloc().unwrap();
        let b = s.alloc().unwrap();
        assert!(s.alloc().is_none());
        *s.get_mut(a).unwrap() = 7;
        assert_eq!(s.in_use(), 2);
        s.release(a);
        s.release(a);
        assert_eq!(s.available(), 1);
        assert!(s.get(a).is_none());
        assert!(s.get(b).is_some());
        assert_eq!(s.alloc(), Some(a));
    }
}
