//! One request, one classified outcome.
