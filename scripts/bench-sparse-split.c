// What splitting the sparse first layer between two workers costs in the kernels themselves.
// Forward: one worker's 200 units against one of two 100-unit slices (each going over every
// non-zero of the batch, as nnd's workers do) and against half of the inputs with all 200
// units (the alternative split). Weight gradient (δ₁ᵀ·X from the two shards' column
// indexes): all 200 units against one 100-unit slice. 64 records of 150 random non-zeros (MNIST: median 150 of 784),
// best of 3000 batches, one core. docs/performance.md ("Fifth session") has the figures.
//
//   clang -O2 -c Sources/CKernels/sparse.c -I Sources/CKernels/include -o /tmp/sparse.o
//   clang -O2 -I Sources/CKernels/include scripts/bench-sparse-split.c /tmp/sparse.o -o /tmp/split && /tmp/split
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "nn_kernels.h"
static double now(){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec*1e-9;}
enum { R = 64, NREC = 4096 };
static long offsets[NREC+1]; static int cols[NREC*800]; static float vals[NREC*800];
static void make(int nnz, int range){ long p=0; for(int i=0;i<NREC;i++){ offsets[i]=p; char used[784]={0}; int c=0; while(c<nnz){int k=rand()%range; if(!used[k]){used[k]=1;c++;}} for(int k=0;k<range;k++) if(used[k]){cols[p]=k; vals[p]=(rand()%255)/255.f; p++;} } offsets[NREC]=p; }
static double run(int units, int ldw, int inputs){
  float *wt=aligned_alloc(64, 784*ldw*4), *z=aligned_alloc(64, R*ldw*4); long cur[R]; int recs[R];
  for(int i=0;i<784*ldw;i++) wt[i]=0.01f*(i%97);
  double best=1e9;
  for(int it=0;it<3000;it++){ for(int r=0;r<R;r++) recs[r]=rand()%NREC; double a=now(); nn_sparse_forward(recs,R,offsets,cols,vals,wt,ldw,units,inputs,z,ldw,cur); double b=now()-a; if(b<best)best=b; }
  free(wt); free(z); return best*1e6;
}
static double grad(int units){
  static long colStart[2][785], cursor[2][784]; static int entryRow[2][R*784]; static float entryVal[2][R*784];
  const long *cs[2]={colStart[0],colStart[1]}; const int *er[2]={entryRow[0],entryRow[1]}; const float *ev[2]={entryVal[0],entryVal[1]};
  float *delta=aligned_alloc(64, R*200*4), *g=aligned_alloc(64, 784*208*4); int recs[R];
  for(int i=0;i<R*200;i++) delta[i]=0.001f*(i%89);
  nn_sparse_store st={0,1,1,0,0,0};
  double best=1e9;
  for(int it=0;it<3000;it++){
    for(int r=0;r<R;r++) recs[r]=rand()%NREC;
    for(int s=0;s<2;s++) nn_sparse_batch_columns(recs+32*s,32,32*s,offsets,cols,vals,784,colStart[s],cursor[s],entryRow[s],entryVal[s]);
    double a=now(); nn_sparse_weight_gradient(cs,er,ev,2,784,delta,200,units,g,units<=112?112:208,st); double b=now()-a; if(b<best)best=b; }
  free(delta); free(g); return best*1e6;
}
int main(){
  srand(1); make(150,784);
  printf("1 worker, 200 units (ldw 208), 150 nnz/record:   %.1f us\n", run(200,208,784));
  printf("unit slice, 100 units (ldw 112), 150 nnz/record: %.1f us\n", run(100,112,784));
  printf("gradient, 200 units, both shards:              %.1f us\n", grad(200));
  printf("gradient, 100-unit slice, both shards:         %.1f us\n", grad(100));
  make(75,392);
  printf("input half, 200 units (ldw 208), 75 nnz/record:  %.1f us\n", run(200,208,392));
}
