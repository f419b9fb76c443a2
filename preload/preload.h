// Shared by the interposition forwarders in preload/.
#pragma once

#define MMTIER_EXPORT __attribute__((visibility("default")))
