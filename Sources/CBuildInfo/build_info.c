// The build's git commit, for `nnd info`. `make build`, `make build-static` and `make test`
// write commit.h (ignored by git) and touch this file when the commit changes; a plain
// `swift build` has no commit.h and says "unknown".
#include "build_info.h"

#if __has_include("commit.h")
#include "commit.h"
#endif
#ifndef NND_GIT_COMMIT
#define NND_GIT_COMMIT "unknown"
#endif

const char *nnd_git_commit(void) { return NND_GIT_COMMIT; }
