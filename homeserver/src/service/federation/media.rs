//! Media of other units over federation (work in progress).
