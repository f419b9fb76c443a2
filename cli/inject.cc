// mmtier inject: rewrites Kubernetes YAML so that the pods whose mmtier.io/
// annotations ask for it run under libmmtier.  The rewriting is
// cli/inject.py (YAML in, YAML out, with Python's yaml module); this finds
// it and runs it with python3.
#include "cli.h"

#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

namespace mmtier::cli {
namespace {

// Next to this command in a build tree; under libexec when installed.
std::string find_script() {
  const std::string dir = self_dir();
  for (const std::string &candidate :
       {dir + "/mmtier-inject", dir + "/../libexec/mmtier/mmtier-inject", std::string(MMTIER_INSTALL_FULL_LIBEXECDIR) + "/mmtier/mmtier-inject"})
    if (access(candidate.c_str(), R_OK) == 0) return candidate;
  throw failure("inject: its script mmtier-inject is not installed next to mmtier or in libexec/mmtier");
}

}  // namespace

int inject_main(const args &a) {
  for (const std::string &s : a)
    if (s == "-h" || s == "--help") {
      std::cout << help_text("inject");
      return 0;
    }
  const std::string script = find_script();
  std::vector<const char *> argv{"python3", script.c_str()};
  for (const std::string &s : a) argv.push_back(s.c_str());
  argv.push_back(nullptr);
  // The system's python3 first: the one the distribution's yaml module
  // (python3-yaml) is installed for; else the first on PATH.
  execv("/usr/bin/python3", const_cast<char *const *>(argv.data()));
  execvp("python3", const_cast<char *const *>(argv.data()));
  throw failure(strf("inject: cannot run python3 (%s); it needs python3 and its yaml module "
                     "(Debian: apt-get install python3 python3-yaml)",
                     strerror(errno)),
                errno == ENOENT ? 127 : 126);
}

}  // namespace mmtier::cli
