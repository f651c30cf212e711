//! wait (being written)
/// stub
pub enum WaitSource { /** stub */ None }
/// stub
pub struct Doorbell;
