//! Durable storage for Chorus (in progress).
