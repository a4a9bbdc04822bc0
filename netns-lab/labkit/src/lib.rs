//! labkit: test helpers for the netns lab.
