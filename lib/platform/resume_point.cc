// See resume_point.h.
#include "platform/resume_point.h"

#if defined(__x86_64__)
asm(R"(
  .text
  .globl mmtier_resume_point_save
  .hidden mmtier_resume_point_save
  .type mmtier_resume_point_save, @function
  .p2align 4
mmtier_resume_point_save:
  .cfi_startproc
  movq %rbx, 0(%rdi)
  movq %rbp, 8(%rdi)
  movq %r12, 16(%rdi)
  movq %r13, 24(%rdi)
  movq %r14, 32(%rdi)
  movq %r15, 40(%rdi)
  leaq 8(%rsp), %rax
  movq %rax, 48(%rdi)
  movq (%rsp), %rax
  movq %rax, 56(%rdi)
  stmxcsr 64(%rdi)
  fnstcw 68(%rdi)
  movw $0, 70(%rdi)
  xorl %eax, %eax
  ret
  .cfi_endproc
  .size mmtier_resume_point_save, .-mmtier_resume_point_save
)");
#else
extern "C" int mmtier_resume_point_save(mmtier::detail::resume_point *) { return 0; }
#endif
