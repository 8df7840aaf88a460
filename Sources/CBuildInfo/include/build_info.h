#ifndef NND_BUILD_INFO_H
#define NND_BUILD_INFO_H

/// The git commit the binary was built from ("unknown" when built outside make).
const char *nnd_git_commit(void);

#endif
