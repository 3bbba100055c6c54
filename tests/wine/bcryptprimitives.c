/* Test-only stand-in for bcryptprimitives.dll, which Wine 8.0 (Debian bookworm) lacks.
 * Rust's standard library has needed its one function, ProcessPrng, since 1.78; real
 * Windows 10 and 11 ship the DLL. scripts/cross builds this beside the agent's .exe for
 * the wine tests only; it is never installed or packaged.
 * ProcessPrng fills a buffer with random bytes; RtlGenRandom (SystemFunction036 in
 * advapi32) does the same on every Windows and Wine version. */
#include <windows.h>
#define SystemFunction036 NTAPI SystemFunction036
#include <ntsecapi.h>
#undef SystemFunction036

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!RtlGenRandom(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
