//! Routed pages, one file each with its server functions; sections they share.

pub mod dead_letters;
pub mod home;
