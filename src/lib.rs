pub mod log;
pub mod projection;
pub mod record;
