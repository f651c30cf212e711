//! The device mesh: the world's ranks arranged as `pp × dp × tp` (pipeline, data, tensor
//! parallel), and the sub-communicators each rank trains with.
//!
//! **Rank layout.** World rank `rank = (pp_idx·dp + dp_idx)·tp + tp_idx`: tp is innermost,
//! then dp, then pp (Megatron-LM's order). Tensor parallelism communicates in every layer, in
//! the forward and the backward pass, so its ranks are neighbours (the same host, when a
//! launcher places consecutive ranks together); data parallelism communicates once a step,
//! pipeline parallelism only activations between stages.
//!
//! ```text
//! dp = 2, tp = 2, pp = 1:      tp groups {0,1} {2,3}      dp groups {0,2} {1,3}
//! ```
//!
//! **Groups.** A tp group is the `tp` ranks with the same `(pp_idx, dp_idx)`: they hold the
//! shards of one replica of one stage. A dp group is the `dp` ranks with the same
//! `(pp_idx, tp_idx)`: they hold the same shard and all-reduce its gradient. Both come from
//! [`Communicator::split`] of the world, keyed by the index inside the group, so a group's
//! rank is `tp_idx` (or `dp_idx`). A group of one rank has no communicator (`None`), so a
//! `tp = 1` mesh runs the plain data-parallel code paths, and a group that spans the whole
//! world reuses the world communicator instead of splitting it.
//!
//! A pp group is the `pp` ranks with the same `(dp_idx, tp_idx)`, keyed by `pp_idx`: the
//! stages of one replica's shard, which pass activations forward and their gradients back
//! (see [`crate::pipeline`]).
//!
//! ```text
//! dp = 2, tp = 2, pp = 2:  tp {0,1} {2,3} {4,5} {6,7}  dp {0,2} {1,3} {4,6} {5,7}
//!                          pp {0,4} {1,5} {2,6} {3,7}
//! ```

use crate::model::GptConfig;
use crate::tp::TpGroup;
use candle_core::{Error, Result};
use oxccl::Communicator;

/// The mesh's extent along each axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshShape {
    /// Data-parallel degree (model replicas).
    pub dp: usize,
    /// Tensor-parallel degree (ranks sharing each layer).
    pub tp: usize,
    /// Pipeline-parallel degree (stages).
    pub pp: usize,
}

/// One rank's position in the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshCoord {
    /// Index along the data-parallel axis.
    pub dp: usize,
    /// Index along the tensor-parallel axis.
    pub tp: usize,
    /// Index along the pipeline axis.
    pub pp: usize,
}

impl MeshShape {
    /// Pure data parallelism over `dp` ranks.
    pub fn data_parallel(dp: usize) -> Self {
        MeshShape { dp, tp: 1, pp: 1 }
    }

    /// Number of ranks, `dp·tp·pp`.
    pub fn size(&self) -> usize {
        self.dp * self.tp * self.pp
    }

    /// The world rank at `c` (see the module doc for the layout).
    pub fn rank_of(&self, c: MeshCoord) -> usize {
        (c.pp * self.dp + c.dp) * self.tp + c.tp
    }

    /// The position of world rank `rank` (`rank < size()`).
    pub fn coord_of(&self, rank: usize) -> MeshCoord {
        MeshCoord {
            tp: rank % self.tp,
            dp: (rank / self.tp) % self.dp,
            pp: rank / (self.tp * self.dp),
        }
    }

    /// Whether a world of `world` ranks fits this shape; the error says why not.
    pub fn check_world(&self, world: usize) -> std::result::Result<(), String> {
        if self.dp == 0 || self.tp == 0 || self.pp == 0 {
            return Err(format!("mesh {self} has an axis of size 0"));
        }
        if world != self.size() {
            return Err(format!(
                "world size {world} is not dp·tp·pp = {} for mesh {self}",
                self.size()
            ));
        }
        Ok(())
    }

    /// Whether `model` can be split over this mesh's tp ranks: heads, vocabulary, width and
    /// MLP width must be multiples of `tp`. The error names the first that is not.
    pub fn check_model(&self, model: &GptConfig) -> std::result::Result<(), String> {
        let tp = self.tp;
        let dims = [
            ("attention heads (n_head)", model.n_head),
            ("vocabulary (vocab_size; pad it)", model.vocab_size),
            ("width (n_embd)", model.n_embd),
            ("MLP width (4·n_embd)", 4 * model.n_embd),
        ];
        for (what, n) in dims {
            if tp == 0 || n % tp != 0 {
                return Err(format!(
                    "{what} = {n} does not split over {tp} tensor-parallel ranks"
                ));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for MeshShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dp {} × tp {} × pp {}", self.dp, self.tp, self.pp)
    }
}

/// One rank's mesh: its coordinates and the communicators of its groups.
pub struct Mesh {
    shape: MeshShape,
    coord: MeshCoord,
    dp: Option<Communicator>,
    tp: Option<TpGroup>,
    pp: Option<Communicator>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("shape", &self.shape)
            .field("coord", &self.coord)
            .finish()
    }
}

impl Mesh {
    /// This rank's mesh over `world` (`None`: a single process, whose shape must be
    /// `1 × 1 × 1`). Collective: every world rank must call it with the same shape.
    pub fn new(world: Option<Communicator>, shape: MeshShape) -> Result<Self> {
        let (size, rank) = world
            .as_ref()
            .map_or((1, 0), |c| (c.size() as usize, c.rank() as usize));
        shape.check_world(size).map_err(Error::msg)?;
        let coord = shape.coord_of(rank);
        let mut world = world;
        // Every rank takes the same branches (they depend on the shape only), so the splits'
        // collectives line up across the world.
        let tp_comm = group(&mut world, shape.tp, size, || {
            let color = coord.pp * shape.dp + coord.dp;
            (color as u32, coord.tp as i32)
        })?;
        let dp_comm = group(&mut world, shape.dp, size, || {
            let color = coord.pp * shape.tp + coord.tp;
            (color as u32, coord.dp as i32)
        })?;
        let pp_comm = group(&mut world, shape.pp, size, || {
            let color = coord.dp * shape.tp + coord.tp;
            (color as u32, coord.pp as i32)
        })?;
        Ok(Mesh {
            shape,
            coord,
            dp: dp_comm,
            tp: tp_comm.map(TpGroup::new),
            pp: pp_comm,
        })
    }

    /// The shape.
    pub fn shape(&self) -> MeshShape {
        self.shape
    }

    /// This rank's coordinates.
    pub fn coord(&self) -> MeshCoord {
        self.coord
    }

    /// This rank's tp group (`None` when `tp = 1`).
    pub fn tp_group(&self) -> Option<&TpGroup> {
        self.tp.as_ref()
    }

    /// Takes the pp communicator (`None` when `pp = 1`, or once taken); its rank is the
    /// stage index.
    pub fn take_pp(&mut self) -> Option<Communicator> {
        self.pp.take()
    }

    /// Hands over the dp communicator (`None` when `dp = 1`) and the tp group.
    pub fn into_groups(self) -> (Option<Communicator>, Option<TpGroup>) {
        (self.dp, self.tp)
    }
}

/// The communicator of a group of `n` ranks out of `world_size`: none for one rank, the
/// world itself when the group is the world, else a split with `color_key()`.
fn group(
    world: &mut Option<Communicator>,
    n: usize,
    world_size: usize,
    color_key: impl FnOnce() -> (u32, i32),
) -> Result<Option<Communicator>> {
    if n == 1 {
        return Ok(None);
    }
    if n == world_size {
        // Only one axis can span the whole world, so the world is taken at most once.
        return Ok(world.take());
    }
    let Some(w) = world.as_mut() else {
        candle_core::bail!("mesh: a group of {n} ranks needs a world communicator");
    };
    let (color, key) = color_key();
    let comm = w.split(Some(color), key).map_err(Error::wrap)?;
    comm.map(Some)
        .ok_or_else(|| Error::msg("mesh: split returned no communicator for a colored rank"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tp_is_innermost_and_coords_round_trip() {
        let s = MeshShape {
            dp: 3,
            tp: 2,
            pp: 2,
        };
        for r in 0..s.size() {
            assert_eq!(s.rank_of(s.coord_of(r)), r);
        }
        let c = s.coord_of(7);
        assert_eq!((c.pp, c.dp, c.tp), (1, 0, 1));
        assert!(s.check_world(12).is_ok());
        assert!(s.check_world(8).unwrap_err().contains("not dp·tp·pp = 12"));
        let mut m = GptConfig::tiny(65);
        assert!(s.check_model(&m).unwrap_err().contains("vocab"));
        m.vocab_size = 66;
        assert!(s.check_model(&m).is_ok());
    }
}
