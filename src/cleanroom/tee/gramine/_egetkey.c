/*
 * ENCLU[EGETKEY] for Python, and nothing else: the one instruction that the
 * Gramine backend cannot express in Python (cleanroom.tee.gramine.localattest
 * builds the KEYREQUEST and computes the CMAC).
 *
 * It runs only inside an SGX enclave (under gramine-sgx). Outside one, ENCLU
 * faults and the process dies; cleanroom.tee.gramine.native refuses to load
 * this module when /dev/attestation is absent.
 *
 *     egetkey(request: bytes, key: bytearray) -> int
 *
 * request is a 512-byte KEYREQUEST; on status 0 the 16-byte key is written into
 * key. The return value is EGETKEY's status (RAX): 0 on success, else an SGX
 * error code such as SGX_INVALID_KEYNAME (SDM Vol. 3D, EGETKEY).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define KEYREQUEST_SIZE 512
#define KEY_SIZE 16
#define ENCLU_EGETKEY 1

/* Clears memory in a way the compiler may not remove as a dead store. */
static void erase(void *buffer, size_t size) {
    volatile uint8_t *bytes = buffer;
    while (size--)
        *bytes++ = 0;
}

static PyObject *egetkey(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer request, key;
    if (!PyArg_ParseTuple(args, "y*w*", &request, &key))
        return NULL;
    if (request.len != KEYREQUEST_SIZE || key.len != KEY_SIZE) {
        PyErr_Format(PyExc_ValueError,
                     "egetkey: expected a %d-byte KEYREQUEST and a %d-byte key buffer, "
                     "got %zd and %zd bytes",
                     KEYREQUEST_SIZE, KEY_SIZE, request.len, key.len);
        PyBuffer_Release(&request);
        PyBuffer_Release(&key);
        return NULL;
    }

    /* EGETKEY wants the KEYREQUEST 512-byte aligned and the output 16-byte aligned. */
    _Alignas(512) uint8_t aligned_request[KEYREQUEST_SIZE];
    _Alignas(16) uint8_t aligned_key[KEY_SIZE];
    memcpy(aligned_request, request.buf, KEYREQUEST_SIZE);
    memset(aligned_key, 0, KEY_SIZE);

    uint64_t status = ENCLU_EGETKEY; /* RAX: leaf in, status out; RBX, RCX: addresses */
    __asm__ volatile("enclu"
                     : "+a"(status)
                     : "b"(aligned_request), "c"(aligned_key)
                     : "memory", "cc");

    if (status == 0)
        memcpy(key.buf, aligned_key, KEY_SIZE);
    erase(aligned_key, KEY_SIZE);
    PyBuffer_Release(&request);
    PyBuffer_Release(&key);
    return PyLong_FromUnsignedLongLong(status);
}

static PyMethodDef methods[] = {
    {"egetkey", egetkey, METH_VARARGS,
     "egetkey(request, key) -> status: ENCLU[EGETKEY]; only inside an SGX enclave."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_egetkey", "ENCLU[EGETKEY], for use inside a Gramine SGX enclave.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__egetkey(void) { return PyModule_Create(&module); }
