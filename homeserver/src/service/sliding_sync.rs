//! Simplified sliding sync (MSC4186), work in progress.
