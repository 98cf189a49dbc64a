//! Authentication for Chorus (in progress).
