// Declarations only; the definitions come from the fuzzer runtime.
