//! The integration tests of this crate as one test binary, a module per concern.
