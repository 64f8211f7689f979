# pyarrow.compute builds its functions (unique, sum, list_flatten, ...) at import time from the
# C++ function registry, so no static source names them; pyarrow ships no stubs (26.x). This stub
# says what the module really is: any attribute, typed Any. The rest of pyarrow resolves as usual.
from typing import Any

def __getattr__(name: str) -> Any: ...
