//! Recursive doubling (all-reduce, all-gather) and recursive halving-doubling (Rabenseifner:
//! reduce-scatter, all-reduce): pairwise exchanges at distances `1, 2, 4, …` (or `…, 4, 2, 1`).
//!
//! # Nomenclature
//! - `p`: ranks; `r`: this rank; `L = ⌊log2 p⌋`; `q = 2^L`, the largest power of two `≤ p`.
//! - **core** ranks `0..q` run the exchanges; the `e = p − q` **extra** ranks `q..p` do not:
//!   extra rank `q+i` is the **guest** of core rank `i < e`, its **host**.
//! - **partner** at level `k` (`k < L`): `r XOR 2^k`, a core rank.
//! - **chunk**: the unit of data one message carries: one split of the block (all-reduce) or
//!   one block (all-gather, reduce-scatter). Every message is one chunk.
//! - **owner** of a chunk: the core rank that ends holding its result. Reduce-scatter and
//!   all-gather block `b` is owned by core rank `b` (`b < q`) or by its host `b − q`
//!   (`b ≥ q`); halving-doubling all-reduce cuts the block into `q` splits, split `s` owned by
//!   rank `s`.
//! - **accumulator**: where a chunk's partial result lives on a core rank: first its input
//!   chunk (read-only), then a scratch chunk or its output chunk (its **home**).
//!
//! # Plans of rank `r`
//! Every channel runs the same steps over its piece of every block.
//!
//! **Recursive doubling all-reduce** (splits 1, scratch at most 1 block). Extra rank: `send
//! input to host`; `recv from host into output`. Core rank: if it hosts a guest,
//! `recv_reduce from guest with input into output` (the fold); then for `k = 0..L`:
//! `send_recv accumulator to partner, from partner into landing`, and a local `reduce` of the
//! two (see *accumulators* below); then, if the result is not in the output yet (only with
//! `L = 1` and no guest), `copy` it there; finally, with a guest, `send output to guest`.
//!
//! **Recursive doubling all-gather** (splits 1, no scratch). Core rank `r` **holds** at level
//! `k` the blocks whose owner agrees with `r` on bits `k..`: its own block and its guest's at
//! first, twice as many owners each level. Steps: `copy input into output[r]`; with a guest,
//! `recv from guest into output[guest]`; for `k = 0..L`: the held blocks, in block order, go to
//! the partner while the partner's held blocks arrive, one `send_recv` per pair of blocks
//! (then plain `send`s or `recv`s for the longer list when hosts make the two lists unequal);
//! finally, with a guest, `send` it every block but its own, in block order. Extra rank:
//! `send input to host`; `copy input into output[r]`; `recv` every other block from the host,
//! in block order.
//!
//! **Halving-doubling reduce-scatter** (splits 1; scratch: the blocks kept at the first
//! level, `q/2` plus as many guests' blocks, and one landing block). Core rank:
//! recursive halving, `k = L−1` down to `0`: of the blocks whose owner agrees with `r` on bits
//! `k+1..` (the **current** set, the same on both partners), those whose owner's bit `k`
//! differs from `r`'s go to the partner and the others arrive from it, paired in block order
//! into `send_recv`s (received partials land in scratch or the home and are folded in with a
//! `reduce`), the rest as plain `send`s or as `recv_reduce`s straight into the accumulator.
//! Afterwards `r` holds the full result of its own block (moved into `output[b0]` if it is
//! not there yet) and of its guest's block, which it then `send`s to the guest. Extra rank:
//! `send` every input block to the host (in the order the host folds them in); `recv from
//! host into output[b0]`.
//!
//! **Halving-doubling all-reduce** (splits `q`, scratch 1 block). The block is cut into `q`
//! splits (not `p`: every halving step then exchanges exactly half of the current set, with
//! no unequal lists, and extra ranks own nothing). Core rank: the reduce-scatter's halving over
//! the `q` splits (ending with split `r` complete in `output[b0.s_r]`), then recursive
//! doubling, `k = 0..L`: the `2^k` held splits go to the partner while the partner's `2^k`
//! arrive, one `send_recv` per pair, output to output; finally, with a guest, `send` it all
//! `q` splits in split order. Extra rank: `send` every input split to the host (in its fold
//! order); `recv` every split from the host into the output, in split order.
//!
//! With one rank every plan is a single local `copy` (and the extra-rank cases are empty).
//!
//! # Non-powers of two
//! The `e` guests fold in first and get the result last: a guest's input reaches only its
//! host, which folds it into its own (`recv_reduce`, reduced straight out of the connection)
//! and thereby stands for both ranks in the exchanges among the `q` core ranks; at the end
//! the host sends the guest its result. Reducing plans fold each chunk just before the host
//! first uses it (its first send or receive), so a chunk the host gives away at once never
//! needs scratch; the guest sends its chunks in exactly that order (it computes its host's
//! plan to learn it), because a received chunk must land in the split it was sent from.
//! All-gather has nothing to fold: the guest's block becomes one more held block of the
//! host's, so the lists of held blocks of two partners can differ in length (by the number
//! of guests on each side).
//!
//! # Accumulators, in place
//! The input is read-only, the output of an in-place op is the input's memory
//! ([`Collective::in_place_blocks`]), and a local `reduce` has no third operand
//! (`dst = dst ⊕ src`). So a chunk's partial result starts as its input chunk; the first
//! partial received for it lands in scratch, and `reduce input into scratch` makes that
//! scratch chunk the accumulator (the output cannot take the received data: in place it is the
//! input, which that `send_recv` is sending and the `reduce` still reads). Once the accumulator is in scratch, the next partial lands in the
//! home (the input is consumed by then, so overwriting it in place is fine) and
//! `reduce scratch into home` moves the accumulator there; later partials land in a scratch
//! chunk that is reduced into the home and reused. A fold `recv_reduce` writes the home
//! directly (it may read and write the same memory). Chunks without a home (reduce-scatter's
//! other blocks) accumulate in scratch, reused as soon as the chunk is sent away. The verifier
//! checks every plan in place and out of place.
//!
//! # Why it cannot deadlock
//! The two partners of a level walk the same two lists in the same order, so the `j`-th
//! exchange of one meets the `j`-th of the other. The halves of a `send_recv` progress
//! independently: each side's send goes out while its receive waits for the other's, and a
//! rank sends its next chunk to the partner only after receiving the partner's previous one,
//! which the partner sent only once it had received the one before. So a connection never
//! needs room for more than one chunk. Unequal lists end in plain sends on one side, matched
//! in order by receives on the other that wait for nothing else. A guest first only sends
//! (its host receives the chunks in that order, as it needs them, waiting for nothing but the
//! guest), then only receives what its host sends it last. The tests verify every plan with
//! FIFOs of two chunks (the engine's) and of one, over two and three rounds.
//!
//! # Why every rank gets the same bits
//! Halving-doubling reduces every chunk on exactly one rank, its owner; the others receive
//! copies. Recursive doubling all-reduce reduces on every rank, so the fold order matters:
//! floating-point `⊕` is not associative. By induction on the level, after level `k` all
//! ranks of an aligned group of `2^(k+1)` core ranks hold bit-identical partial results:
//! at level `k` a rank and its partner hold the results `a` and `b` of the two aligned
//! half-groups (bit-identical within each half-group, and a guest's input is folded in only by
//! its host before level 0), and each computes `a ⊕ b` or `b ⊕ a` of those same two values.
//! IEEE addition and multiplication are commutative (`a + b` and `b + a` are the same
//! correctly rounded value), and so are min and max provided the engine's kernels break ties
//! symmetrically (NaNs, `−0` against `+0`), so both get the same bits. The guests receive
//! their host's bits.
//!
//! # Cost
//! `n` is the size of one block ([`crate::cost`]'s `bytes_per_rank`), α the latency of one
//! message, β the time per byte on a link, γ the time per byte reduced; per rank and op, for
//! `p` a power of two, as [`crate::cost::traffic`] counts them. Every `send_recv` after a
//! receive waits for its partner's message, so each one costs an α: the model charges one α
//! per chunk exchanged, and the algorithms that send one chunk per level (recursive doubling
//! all-reduce) get the textbook `log2 p` latencies while those that send many chunks per level
//! pay one latency per chunk, like the ring.
//!
//! | plan | messages sent | cost |
//! |---|---|---|
//! | recursive doubling all-reduce | `log2 p` | `log2 p·(α + nβ + nγ)` |
//! | recursive doubling all-gather | `p−1` | `(p−1)α + (p−1)nβ` |
//! | halving-doubling reduce-scatter | `p−1` | `(p−1)α + (p−1)nβ + (p−1)nγ` |
//! | halving-doubling all-reduce | `2(p−1)` | `2(p−1)α + 2(p−1)/p·nβ + (p−1)/p·nγ` |
//!
//! Recursive doubling all-reduce beats the ring's `2(p−1)α + 2(p−1)/p·nβ + (p−1)/p·nγ` for
//! small `n`: it sends `log2 p` times the whole block instead of `2(p−1)` pieces of `n/p`.
//! The others cost what the ring costs in this model (the textbook `log2 p` latencies of
//! recursive doubling all-gather and of the halving steps need one message of several chunks
//! per level); they differ from the ring in whom they talk to (partners at distance `2^k`, no
//! neighbour ring), which the α–β–γ model does not see.
//!
//! Other `p` (`q < p`): a guest sends its input once and receives the result once (all-gather:
//! 1 message out, `p−1` in; reduce-scatter: `p` out, 1 in; halving-doubling all-reduce: `q`
//! splits each way). A host adds the fold of its guest's data (`nγ`; `p·nγ` for
//! reduce-scatter) and the sends of the result to the guest (`α + nβ` for recursive doubling
//! all-reduce: `(L+1)(α + nβ + nγ)` in all; `q` splits, `n` bytes, for halving-doubling
//! all-reduce; `p−1` blocks for all-gather; one block for reduce-scatter). The exchanges
//! cost what they cost on `q` ranks, with longer lists where guests' blocks travel
//! (all-gather, reduce-scatter). The critical path gains the guest's send before the
//! exchanges and the host's send after them.

use crate::built::Built;
use crate::{Algorithm, Buf, Collective, Region, Step};

fn input(block: u32, split: u32) -> Region {
    Region::new(Buf::Input, block, split)
}

fn output(block: u32, split: u32) -> Region {
    Region::new(Buf::Output, block, split)
}

/// One rank's view of the core ranks and the extra ranks (see the module doc).
#[derive(Debug, Clone, Copy)]
struct Group {
    /// Ranks.
    p: u32,
    /// The largest power of two `<= p`.
    q: u32,
    /// `log2 q`.
    levels: u32,
    /// This rank.
    r: u32,
}

impl Group {
    fn new(p: u32, r: u32) -> Self {
        let levels = 31 - p.leading_zeros();
        Self {
            p,
            q: 1 << levels,
            levels,
            r,
        }
    }

    /// The same group seen from `rank`.
    fn at(self, rank: u32) -> Self {
        Self { r: rank, ..self }
    }

    /// This extra rank's host (`None`: a core rank).
    fn host(self) -> Option<u32> {
        (self.r >= self.q).then(|| self.r - self.q)
    }

    /// This core rank's guest, if it hosts one.
    fn guest(self) -> Option<u32> {
        (self.r < self.q && self.r + self.q < self.p).then(|| self.r + self.q)
    }

    /// The core rank owning block `b` of a `p`-block buffer.
    fn owner(self, b: u32) -> u32 {
        if b < self.q {
            b
        } else {
            b - self.q
        }
    }

    /// The partner at level `k`.
    fn partner(self, k: u32) -> u32 {
        self.r ^ (1 << k)
    }
}

/// Where a chunk's partial result is on a core rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acc {
    /// Still only the (read-only) input chunk.
    Input,
    /// In this writable chunk.
    At(Region),
    /// Sent away for good.
    Gone,
}

/// A core rank's chunks of a reducing plan, the steps emitted so far and the scratch they
/// use (see *accumulators* in the module doc).
struct Chunks {
    /// Per chunk: its input chunk.
    input: Vec<Region>,
    /// Per chunk: the output chunk its result must end in, if this rank keeps it.
    home: Vec<Option<Region>>,
    /// Per chunk: its accumulator.
    acc: Vec<Acc>,
    /// The guest whose chunks are folded in on first use.
    guest: Option<u32>,
    /// Per chunk: whether the guest's chunk was folded in.
    folded: Vec<bool>,
    /// The guest's chunks, as input regions, in the order they were folded in.
    fold_order: Vec<Region>,
    /// Per split: scratch blocks free for reuse.
    free: Vec<Vec<u32>>,
    /// Per split: scratch blocks handed out so far.
    allocated: Vec<u32>,
    steps: Vec<Step>,
}

impl Chunks {
    /// Chunks `(input, home)`, indexed by chunk number.
    fn new(chunks: Vec<(Region, Option<Region>)>, splits: u32, guest: Option<u32>) -> Self {
        let n = chunks.len();
        let (input, home) = chunks.into_iter().unzip();
        Self {
            input,
            home,
            acc: vec![Acc::Input; n],
            guest,
            folded: vec![false; n],
            fold_order: Vec::new(),
            free: vec![Vec::new(); splits as usize],
            allocated: vec![0; splits as usize],
            steps: Vec::new(),
        }
    }

    /// Scratch blocks needed: the most any split used.
    fn scratch_blocks(&self) -> u32 {
        self.allocated.iter().copied().max().unwrap_or(0)
    }

    /// A free scratch chunk of split `split`.
    fn alloc(&mut self, split: u32) -> Region {
        let s = split as usize;
        let block = self.free[s].pop().unwrap_or_else(|| {
            self.allocated[s] += 1;
            self.allocated[s] - 1
        });
        Region::new(Buf::Scratch, block, split)
    }

    /// Returns `region` to the free list if it is scratch.
    fn release(&mut self, region: Region) {
        if region.buf == Buf::Scratch {
            self.free[region.split as usize].push(region.block);
        }
    }

    /// The region holding chunk `c`'s partial result now.
    fn current(&self, c: usize) -> Region {
        match self.acc[c] {
            Acc::Input => self.input[c],
            Acc::At(region) => region,
            Acc::Gone => unreachable!("chunk {c} was sent away"),
        }
    }

    /// Folds the guest's chunk `c` in, unless done (or there is no guest).
    fn fold(&mut self, c: usize) {
        if let Some(guest) = self.guest {
            if !std::mem::replace(&mut self.folded[c], true) {
                self.fold_order.push(self.input[c]);
                self.reduce_incoming(c, guest);
            }
        }
    }

    /// `recv_reduce` from `from` into chunk `c`'s accumulator, moving it to the home if any.
    fn reduce_incoming(&mut self, c: usize, from: u32) {
        let src = self.current(c);
        let dst = match (self.home[c], self.acc[c]) {
            (Some(home), _) => home,
            (None, Acc::At(region)) => region,
            (None, _) => self.alloc(src.split),
        };
        self.steps.push(Step::RecvReduce { from, src, dst });
        if src != dst {
            self.release(src);
        }
        self.acc[c] = Acc::At(dst);
    }

    /// Where a partial result received for chunk `c` lands before it is folded in.
    fn landing(&mut self, c: usize) -> Region {
        match (self.acc[c], self.home[c]) {
            (Acc::At(region), Some(home)) if region.buf == Buf::Scratch => home,
            _ => self.alloc(self.input[c].split),
        }
    }

    /// Folds the partial result that landed in `landing` into chunk `c`'s accumulator.
    fn combine(&mut self, c: usize, landing: Region) {
        match self.acc[c] {
            Acc::Input => {
                self.steps.push(Step::Reduce {
                    src: self.input[c],
                    dst: landing,
                });
                self.acc[c] = Acc::At(landing);
            }
            Acc::At(region) if Some(landing) == self.home[c] => {
                self.steps.push(Step::Reduce {
                    src: region,
                    dst: landing,
                });
                self.release(region);
                self.acc[c] = Acc::At(landing);
            }
            Acc::At(region) => {
                self.steps.push(Step::Reduce {
                    src: landing,
                    dst: region,
                });
                self.release(landing);
            }
            Acc::Gone => unreachable!("chunk {c} was sent away"),
        }
    }

    /// Chunk `c` is no longer this rank's.
    fn give_up(&mut self, c: usize) {
        if let Acc::At(region) = self.acc[c] {
            self.release(region);
        }
        self.acc[c] = Acc::Gone;
    }

    /// One pairwise exchange with `partner`: send chunk `out`'s partial result while
    /// receiving the partner's of chunk `back`, then fold it in. `out == back` (recursive
    /// doubling) keeps the chunk; otherwise `out` is given up.
    fn exchange(&mut self, partner: u32, out: usize, back: usize) {
        self.fold(out);
        self.fold(back);
        let src = self.current(out);
        let dst = self.landing(back);
        self.steps.push(Step::SendRecv {
            to: partner,
            src,
            from: partner,
            dst,
        });
        if out != back {
            self.give_up(out);
        }
        self.combine(back, dst);
    }

    /// Sends chunk `c` to `to` and gives it up.
    fn send(&mut self, to: u32, c: usize) {
        self.fold(c);
        let src = self.current(c);
        self.steps.push(Step::Send { to, src });
        self.give_up(c);
    }

    /// Receives a partial result of chunk `c` from `from` and reduces it in.
    fn recv_reduce(&mut self, from: u32, c: usize) {
        self.fold(c);
        self.reduce_incoming(c, from);
    }

    /// Moves chunk `c`'s result into its home if it is not there yet.
    fn finish(&mut self, c: usize) {
        self.fold(c);
        let home = self.home[c].expect("a finished chunk has a home");
        let src = self.current(c);
        if src != home {
            self.steps.push(Step::Copy { src, dst: home });
            self.release(src);
            self.acc[c] = Acc::At(home);
        }
    }

    /// Recursive halving over every chunk, chunk `c` owned by core rank `owner(c)`: for
    /// `k = L-1` down to `0`, the current chunks whose owner's bit `k` differs from this
    /// rank's go to the partner, the others come from it, paired in chunk order.
    fn halve(&mut self, g: Group, owner: impl Fn(u32) -> u32) {
        for k in (0..g.levels).rev() {
            let partner = g.partner(k);
            let (mut give, mut keep) = (Vec::new(), Vec::new());
            for c in 0..self.input.len() {
                let o = owner(c as u32);
                if o >> (k + 1) != g.r >> (k + 1) {
                    continue;
                }
                if ((o ^ g.r) >> k) & 1 == 1 {
                    give.push(c);
                } else {
                    keep.push(c);
                }
            }
            for j in 0..give.len().max(keep.len()) {
                match (give.get(j), keep.get(j)) {
                    (Some(&out), Some(&back)) => self.exchange(partner, out, back),
                    (Some(&out), None) => self.send(partner, out),
                    (None, Some(&back)) => self.recv_reduce(partner, back),
                    (None, None) => unreachable!("j is below the longer length"),
                }
            }
        }
    }
}

/// The reducing plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reducing {
    /// Recursive doubling all-reduce.
    DoublingAllReduce,
    /// Halving-doubling reduce-scatter.
    HalvingReduceScatter,
    /// Halving-doubling all-reduce.
    HalvingAllReduce,
}

/// The steps of rank `rank` of `nranks`; the arguments were checked by [`crate::build`].
pub(crate) fn steps(algorithm: Algorithm, collective: Collective, nranks: u32, rank: u32) -> Built {
    let g = Group::new(nranks, rank);
    match (algorithm, collective) {
        (Algorithm::RecursiveDoubling, Collective::AllReduce) => {
            reducing(g, Reducing::DoublingAllReduce)
        }
        (Algorithm::RecursiveDoubling, Collective::AllGather) => all_gather(g),
        (Algorithm::HalvingDoubling, Collective::ReduceScatter) => {
            reducing(g, Reducing::HalvingReduceScatter)
        }
        (Algorithm::HalvingDoubling, Collective::AllReduce) => {
            reducing(g, Reducing::HalvingAllReduce)
        }
        _ => unreachable!("build checks Algorithm::supports: {algorithm} {collective:?}"),
    }
}

/// A reducing plan: an extra rank's, or a core rank's from [`core`].
fn reducing(g: Group, plan: Reducing) -> Built {
    let splits = match plan {
        Reducing::HalvingAllReduce => g.q,
        _ => 1,
    };
    let Some(host) = g.host() else {
        let chunks = core(g, plan);
        return Built {
            splits,
            scratch: chunks.scratch_blocks(),
            steps: chunks.steps,
        };
    };
    // The host folds the guest's chunks in the order it first uses them.
    let order = core(g.at(host), plan).fold_order;
    let mut steps: Vec<Step> = order
        .into_iter()
        .map(|src| Step::Send { to: host, src })
        .collect();
    steps.extend((0..splits).map(|s| Step::Recv {
        from: host,
        dst: output(0, s),
    }));
    Built {
        splits,
        scratch: 0,
        steps,
    }
}

/// A core rank's reducing plan.
fn core(g: Group, plan: Reducing) -> Chunks {
    let (r, guest) = (g.r, g.guest());
    match plan {
        Reducing::DoublingAllReduce => {
            let mut chunks = Chunks::new(vec![(input(0, 0), Some(output(0, 0)))], 1, guest);
            for k in 0..g.levels {
                chunks.exchange(g.partner(k), 0, 0);
            }
            chunks.finish(0);
            if let Some(guest) = guest {
                chunks.steps.push(Step::Send {
                    to: guest,
                    src: output(0, 0),
                });
            }
            chunks
        }
        Reducing::HalvingReduceScatter => {
            let blocks = (0..g.p)
                .map(|b| (input(b, 0), (b == r).then(|| output(0, 0))))
                .collect();
            let mut chunks = Chunks::new(blocks, 1, guest);
            chunks.halve(g, |b| g.owner(b));
            chunks.finish(r as usize);
            if let Some(guest) = guest {
                chunks.send(guest, guest as usize);
            }
            chunks
        }
        Reducing::HalvingAllReduce => {
            let splits = (0..g.q)
                .map(|s| (input(0, s), Some(output(0, s))))
                .collect();
            let mut chunks = Chunks::new(splits, g.q, guest);
            chunks.halve(g, |s| s);
            chunks.finish(r as usize);
            // Recursive doubling of the complete splits, output to output.
            for k in 0..g.levels {
                let partner = g.partner(k);
                let (mine, theirs) = ((r >> k) << k, (partner >> k) << k);
                for j in 0..(1 << k) {
                    chunks.steps.push(Step::SendRecv {
                        to: partner,
                        src: output(0, mine + j),
                        from: partner,
                        dst: output(0, theirs + j),
                    });
                }
            }
            if let Some(guest) = guest {
                chunks.steps.extend((0..g.q).map(|s| Step::Send {
                    to: guest,
                    src: output(0, s),
                }));
            }
            chunks
        }
    }
}

/// Recursive doubling all-gather (see the module doc).
fn all_gather(g: Group) -> Built {
    let (p, r) = (g.p, g.r);
    let mut steps = Vec::new();
    if let Some(host) = g.host() {
        steps.push(Step::Send {
            to: host,
            src: input(0, 0),
        });
        steps.push(Step::Copy {
            src: input(0, 0),
            dst: output(r, 0),
        });
        steps.extend((0..p).filter(|&b| b != r).map(|b| Step::Recv {
            from: host,
            dst: output(b, 0),
        }));
    } else {
        steps.push(Step::Copy {
            src: input(0, 0),
            dst: output(r, 0),
        });
        if let Some(guest) = g.guest() {
            steps.push(Step::Recv {
                from: guest,
                dst: output(guest, 0),
            });
        }
        for k in 0..g.levels {
            let partner = g.partner(k);
            // The blocks whose owner agrees with `x` on bits `k..`, in block order.
            let held =
                |x: u32| -> Vec<u32> { (0..p).filter(|&b| g.owner(b) >> k == x >> k).collect() };
            let (mine, theirs) = (held(r), held(partner));
            for j in 0..mine.len().max(theirs.len()) {
                steps.push(match (mine.get(j), theirs.get(j)) {
                    (Some(&b), Some(&c)) => Step::SendRecv {
                        to: partner,
                        src: output(b, 0),
                        from: partner,
                        dst: output(c, 0),
                    },
                    (Some(&b), None) => Step::Send {
                        to: partner,
                        src: output(b, 0),
                    },
                    (None, Some(&c)) => Step::Recv {
                        from: partner,
                        dst: output(c, 0),
                    },
                    (None, None) => unreachable!("j is below the longer length"),
                });
            }
        }
        if let Some(guest) = g.guest() {
            steps.extend((0..p).filter(|&b| b != guest).map(|b| Step::Send {
                to: guest,
                src: output(b, 0),
            }));
        }
    }
    Built {
        splits: 1,
        scratch: 0,
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups() {
        let g = Group::new(6, 1);
        assert_eq!((g.q, g.levels), (4, 2));
        assert_eq!((g.guest(), g.host()), (Some(5), None));
        assert_eq!(g.at(5).host(), Some(1));
        assert_eq!(g.at(3).guest(), None);
        assert_eq!((g.owner(3), g.owner(5)), (3, 1));
        assert_eq!((g.partner(0), g.partner(1)), (0, 3));
        let one = Group::new(1, 0);
        assert_eq!((one.q, one.levels, one.guest()), (1, 0, None));
    }

    #[test]
    fn doubling_all_reduce_accumulates_in_scratch_then_output() {
        let b = steps(Algorithm::RecursiveDoubling, Collective::AllReduce, 4, 2);
        let scratch = Region::new(Buf::Scratch, 0, 0);
        assert_eq!(b.scratch, 1);
        assert_eq!(
            b.steps,
            [
                Step::SendRecv {
                    to: 3,
                    src: input(0, 0),
                    from: 3,
                    dst: scratch
                },
                Step::Reduce {
                    src: input(0, 0),
                    dst: scratch
                },
                Step::SendRecv {
                    to: 0,
                    src: scratch,
                    from: 0,
                    dst: output(0, 0)
                },
                Step::Reduce {
                    src: scratch,
                    dst: output(0, 0)
                },
            ]
        );
    }
}
