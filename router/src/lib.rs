//! The autoj router (being written).
