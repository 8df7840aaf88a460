#include <stddef.h>
#include <stdint.h>
// libFuzzer's driver, for programs that have their own main (SwiftPM generates one for every
// executable). Provided by clang's fuzzer runtime, linked by `-sanitize=fuzzer`.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *Data, size_t Size));
