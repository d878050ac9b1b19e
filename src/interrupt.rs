//! Raising an exception in another Python thread (`PyThreadState_SetAsyncExc`).
//!
//! Used to cancel a `def` activity running in the bridge's thread pool, as temporalio's
//! worker does, and to interrupt workflow code that overran its deadlock timeout. The error
//! is raised when the thread next runs Python bytecode, so a blocking C call finishes first.

use std::os::raw::c_ulong;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// Raise `exc` (an exception class) in the thread `thread_id` (`threading.get_ident()`);
/// `None` clears an exception sent before but not yet raised. Returns whether a thread of
/// that id was found.
#[pyfunction]
#[pyo3(signature = (thread_id, exc))]
pub fn interrupt_thread(thread_id: u64, exc: Option<&Bound<'_, PyType>>) -> PyResult<bool> {
    let exc_ptr = match exc {
        Some(exc) => {
            if !exc.is_subclass_of::<pyo3::exceptions::PyBaseException>()? {
                return Err(PyTypeError::new_err(format!(
                    "interrupt_thread needs an exception class, got {}",
                    exc.name()?
                )));
            }
            exc.as_ptr()
        }
        None => std::ptr::null_mut(),
    };
    let id = c_ulong::try_from(thread_id)
        .map_err(|_| PyTypeError::new_err(format!("thread id {thread_id} out of range")))?;
    // CPython takes an `unsigned long` since 3.7; pyo3's declaration (for the stable ABI)
    // says `long`. The same bits either way.
    #[allow(clippy::cast_possible_wrap)]
    let id = id as _;
    // SAFETY: the GIL is held (we have a `Bound`/are called from Python), the pointer is a
    // live type object or NULL, and the call only records it on the target thread state
    // (taking its own reference).
    let found = unsafe { ffi::PyThreadState_SetAsyncExc(id, exc_ptr) };
    Ok(found > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::types::PyDict;

    #[test]
    fn raises_in_a_running_thread_and_reports_unknown_ids() {
        Python::initialize();
        Python::attach(|py| {
            let module = pyo3::wrap_pyfunction!(interrupt_thread, py).unwrap();
            let globals = PyDict::new(py);
            globals.set_item("interrupt_thread", module).unwrap();
            py.run(
                c"
import threading, time
caught = []
ready = threading.Event()
def spin():
    try:
        ready.set()
        while True:
            time.sleep(0.001)
    except KeyboardInterrupt:
        caught.append(True)
t = threading.Thread(target=spin)
t.start()
ready.wait(10)
found = interrupt_thread(t.ident, KeyboardInterrupt)
t.join(10)
unknown = interrupt_thread(1, KeyboardInterrupt)
try:
    interrupt_thread(t.ident, int)
    not_exc = False
except TypeError:
    not_exc = True
",
                Some(&globals),
                None,
            )
            .unwrap();
            let get = |k: &str| globals.get_item(k).unwrap().unwrap();
            assert!(get("found").extract::<bool>().unwrap());
            assert_eq!(get("caught").len().unwrap(), 1);
            assert!(!get("unknown").extract::<bool>().unwrap());
            assert!(get("not_exc").extract::<bool>().unwrap());
        });
    }
}
