//! RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency
//! proofs over any store of *perfect* subtree hashes.
//!
//! A perfect subtree is one of `2^level` leaves starting at a multiple of
//! `2^level`; its hash never changes once its last leaf is appended, so the
//! gateway stores each exactly once (`(level, index)` → hash, amortized two
//! writes per leaf). Any subtree a proof needs is a perfect one or a "ragged"
//! right edge made of at most log2(n) perfect ones, so roots and proofs take
//! O(log n) hashes and O(log² n) worst-case reads, O(log n) typical.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Where perfect subtree hashes come from: the store, or memory.
pub trait Nodes {
    fn perfect(&self, level: u32, index: u64) -> anyhow::Result<Hash>;
}

/// Largest power of two strictly less than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH of leaves `[start, start + size)`.
pub fn subtree<N: Nodes + ?Sized>(nodes: &N, start: u64, size: u64) -> anyhow::Result<Hash> {
    if size.is_power_of_two() && start % size == 0 {
        return nodes.perfect(size.trailing_zeros(), start / size);
    }
    let k = split(size);
    Ok(node_hash(
        &subtree(nodes, start, k)?,
        &subtree(nodes, start + k, size - k)?,
    ))
}

pub fn root<N: Nodes + ?Sized>(nodes: &N, size: u64) -> anyhow::Result<Hash> {
    if size == 0 {
        return Ok(empty_root());
    }
    subtree(nodes, 0, size)
}

/// RFC 9162 §2.1.3.1 PATH(index, D[0:size]).
pub fn inclusion_proof<N: Nodes + ?Sized>(
    nodes: &N,
    index: u64,
    size: u64,
) -> anyhow::Result<Vec<Hash>> {
    anyhow::ensure!(index < size, "index {index} is not below tree size {size}");
    let mut out = Vec::new();
    path(nodes, index, 0, size, &mut out)?;
    Ok(out)
}

fn path<N: Nodes + ?Sized>(
    nodes: &N,
    m: u64,
    start: u64,
    n: u64,
    out: &mut Vec<Hash>,
) -> anyhow::Result<()> {
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(nodes, m, start, k, out)?;
        out.push(subtree(nodes, start + k, n - k)?);
    } else {
        path(nodes, m - k, start + k, n - k, out)?;
        out.push(subtree(nodes, start, k)?);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.1 PROOF(old, D[0:new]).
pub fn consistency_proof<N: Nodes + ?Sized>(
    nodes: &N,
    old: u64,
    new: u64,
) -> anyhow::Result<Vec<Hash>> {
    anyhow::ensure!(old <= new, "old size {old} is above new size {new}");
    let mut out = Vec::new();
    if old > 0 && old < new {
        subproof(nodes, old, 0, new, true, &mut out)?;
    }
    Ok(out)
}

fn subproof<N: Nodes + ?Sized>(
    nodes: &N,
    m: u64,
    start: u64,
    n: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> anyhow::Result<()> {
    if m == n {
        if !whole {
            out.push(subtree(nodes, start, n)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(nodes, m, start, k, whole, out)?;
        out.push(subtree(nodes, start + k, n - k)?);
    } else {
        subproof(nodes, m - k, start + k, n - k, false, out)?;
        out.push(subtree(nodes, start, k)?);
    }
    Ok(())
}

/// RFC 9162 §2.1.3.2.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode, mut r) = (index, size - 1, *leaf);
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// RFC 9162 §2.1.4.2.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if old == 0 {
        return proof.is_empty() && *old_root == empty_root();
    }
    if old > new || proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && fr == *old_root && sr == *new_root
}

/// The root of a growing tree in O(log n) memory: the perfect subtrees of
/// its binary decomposition, largest first. What start-up uses to check the
/// segments against the newest checkpoint without keeping every leaf.
#[derive(Debug, Default, Clone)]
pub struct Frontier {
    stack: Vec<(u32, Hash)>,
    size: u64,
}

impl Frontier {
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(level, left)) = self.stack.last() {
            if level != node.0 {
                break;
            }
            self.stack.pop();
            node = (level + 1, node_hash(&left, &node.1));
        }
        self.stack.push(node);
        self.size += 1;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// RFC 6962 root of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// Every perfect subtree of a list of leaves, in memory: what offline
/// verification and the tests build.
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    pub fn new() -> Self {
        Self {
            levels: vec![Vec::new()],
        }
    }

    pub fn push(&mut self, leaf: Hash) {
        self.levels[0].push(leaf);
        let mut level = 0;
        while self.levels[level].len() % 2 == 0 {
            let l = &self.levels[level];
            let parent = node_hash(&l[l.len() - 2], &l[l.len() - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
    }

    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }
}

impl Default for MemoryTree {
    fn default() -> Self {
        Self::new()
    }
}

impl Nodes for MemoryTree {
    fn perfect(&self, level: u32, index: u64) -> anyhow::Result<Hash> {
        self.levels
            .get(level as usize)
            .and_then(|l| l.get(index as usize))
            .copied()
            .ok_or_else(|| anyhow::anyhow!("no perfect subtree at level {level} index {index}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::leaf_hash;

    fn h(s: &str) -> Hash {
        data_encoding::HEXLOWER
            .decode(s.as_bytes())
            .unwrap()
            .try_into()
            .unwrap()
    }

    /// The RFC 6962 reference leaves (transparency-dev/merkle testonly).
    fn reference() -> MemoryTree {
        let mut t = MemoryTree::new();
        for l in [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ] {
            t.push(leaf_hash(
                &data_encoding::HEXLOWER.decode(l.as_bytes()).unwrap(),
            ));
        }
        t
    }

    #[test]
    fn roots_match_rfc6962_vectors() {
        let t = reference();
        let roots = [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        for (n, r) in roots.iter().enumerate() {
            assert_eq!(root(&t, n as u64).unwrap(), h(r), "size {n}");
        }
    }

    #[test]
    fn proofs_match_rfc6962_vectors() {
        let t = reference();
        let incl = [
            (
                0,
                8,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                vec![
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (i, n, want) in incl {
            let got = inclusion_proof(&t, i, n).unwrap();
            assert_eq!(
                got,
                want.iter().map(|s| h(s)).collect::<Vec<_>>(),
                "inclusion {i}/{n}"
            );
            let leaf = t.perfect(0, i).unwrap();
            assert!(verify_inclusion(&leaf, i, n, &got, &root(&t, n).unwrap()));
        }
        let cons = [
            (
                1,
                8,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                2,
                5,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                8,
                vec![
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (m, n, want) in cons {
            let got = consistency_proof(&t, m, n).unwrap();
            assert_eq!(
                got,
                want.iter().map(|s| h(s)).collect::<Vec<_>>(),
                "consistency {m}/{n}"
            );
            assert!(verify_consistency(
                m,
                n,
                &root(&t, m).unwrap(),
                &root(&t, n).unwrap(),
                &got
            ));
        }
    }

    #[test]
    fn the_frontier_root_matches_the_tree_at_every_size() {
        let mut t = MemoryTree::new();
        let mut f = Frontier::default();
        assert_eq!(f.root(), empty_root());
        for i in 0..300u32 {
            let leaf = leaf_hash(&i.to_le_bytes());
            t.push(leaf);
            f.push(leaf);
            assert_eq!(f.root(), root(&t, i as u64 + 1).unwrap(), "size {}", i + 1);
        }
    }

    #[test]
    fn every_proof_verifies_and_a_wrong_one_does_not() {
        let mut t = MemoryTree::new();
        for i in 0..70u32 {
            t.push(leaf_hash(&i.to_le_bytes()));
        }
        for n in 1..=70 {
            let r = root(&t, n).unwrap();
            for i in 0..n {
                let p = inclusion_proof(&t, i, n).unwrap();
                let leaf = t.perfect(0, i).unwrap();
                assert!(verify_inclusion(&leaf, i, n, &p, &r), "{i}/{n}");
                if n > 1 {
                    assert!(!verify_inclusion(&leaf, (i + 1) % n, n, &p, &r));
                }
            }
            for m in 0..=n {
                let p = consistency_proof(&t, m, n).unwrap();
                let old = root(&t, m).unwrap();
                assert!(verify_consistency(m, n, &old, &r, &p), "{m}/{n}");
                if m > 0 && m < n {
                    assert!(!verify_consistency(m, n, &r, &r, &p));
                }
            }
        }
    }
}
