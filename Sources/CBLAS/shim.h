#include <cblas.h>
// OpenBLAS extensions (declared in cblas.h of Debian's libopenblas-dev):
// openblas_set_num_threads, openblas_get_corename, openblas_get_config.
