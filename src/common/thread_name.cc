#include "common/thread_name.h"

#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace sluice {

void SetThreadName(const char* name) {
  // pthread_setname_np refuses names over 15 bytes (ERANGE): cut them.
  std::string cut(name, std::min<size_t>(std::strlen(name), 15));
  pthread_setname_np(pthread_self(), cut.c_str());
}

}  // namespace sluice
