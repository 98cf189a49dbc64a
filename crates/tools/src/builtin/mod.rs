//! The tools every Chorus server has.

mod arithmetic;
mod calculator;
mod clock;

pub use calculator::Calculator;
pub use clock::ClockTool;
