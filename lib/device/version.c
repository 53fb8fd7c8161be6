#include "device/device.h"

const char *pk_device_version(void)
{
    return PK_DEVICE_VERSION;
}
