//! Routed pages, one file each with its server functions.

pub mod home;
