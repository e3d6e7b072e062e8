//! Space hierarchy over federation (work in progress).
