#![no_std]
// The programs live in the `netpath` binary target (src/main.rs); this library exists
// because cargo ignores a package without one as a build-dependency.
