//! Wire types shared by all ciel components.
